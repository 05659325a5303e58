"""The training loop shared by the two-domain models: run directory, resume, logs, grids, checkpoints.

It knows nothing of a model's losses: it asks the trainer for one ``step(real_A, real_B)``,
logs what comes back, draws sample grids with the generators and checkpoints everything.
Resuming is exact: the data streams are a pure function of (seed, step), and the checkpoint
holds the networks, optimisers (with the current learning rate) and RNG states, so a run that
is killed and resumed produces the same losses as one that never stopped (CPU, deterministic).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..config import UGATITConfig, load_yaml, resolve_n_dis, save_yaml, validate
from ..data import DomainStream, TwoDomainData, default_num_workers, open_dataset
from ..errors import UserError
from ..files import atomic_path
from ..models.ugatit import build_ugatit
from ..nn import AdaILN, ILN
from ..viz import make_grid, sample_column, save_png
from .ugatit import UGATITTrainer, official_lr

log = logging.getLogger("unpaired")

# Options that may change when a run is resumed; every other option is part of the run's identity.
RESUMABLE_OPTIONS = {"iters", "print_freq", "save_freq", "log_freq", "keep_checkpoints", "device", "num_workers",
                     "precision", "benchmark_flag", "deterministic", "data", "n_samples", "out"}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but no CUDA device is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None


@dataclass
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def merge_for_resume(saved: UGATITConfig, requested: dict) -> tuple[UGATITConfig, list[str]]:
    """The saved config with the explicitly requested runtime changes; refuse identity changes."""
    merged, notes = saved.to_dict(), []
    for name, value in requested.items():
        if value is None or value == merged.get(name):
            continue
        if name not in RESUMABLE_OPTIONS:
            raise UserError(f"cannot resume with --{name.replace('_', '-')} {value}: the run was made with "
                            f"{name}={merged.get(name)!r} (start a new run with another --out)")
        notes.append(f"{name}: {merged.get(name)!r} -> {value!r}")
        merged[name] = value
    return UGATITConfig(**merged), notes


def load_saved_config(paths: RunPaths) -> UGATITConfig:
    if not paths.config.is_file():
        raise UserError(f"cannot resume: {paths.config} not found (is {paths.root} a run directory?)")
    return UGATITConfig(**load_yaml(paths.config))


def rho_stats(nets: dict[str, torch.nn.Module]) -> dict[str, float]:
    """Mean ρ of the AdaILN and ILN layers of each generator (how IN vs LN the decoder is)."""
    stats = {}
    for name in ("genA2B", "genB2A"):
        for kind, cls in (("adailn", AdaILN), ("iln", ILN)):
            values = [m.rho.detach().float().mean() for m in nets[name].modules() if isinstance(m, cls)]
            if values:
                stats[f"{name}_{kind}"] = torch.stack(values).mean().item()
    return stats


class SampleGrids:
    """Official 7-row sample grids over a fixed set of train and test images per domain.

    The official code steals fresh training batches for every grid; fixed images make grids
    comparable across steps and leave the training stream untouched.
    """

    def __init__(self, data: TwoDomainData, n: int, device: torch.device):
        def pick(dataset, count):
            idx = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
            items = [dataset[(int(i), 0)] for i in idx]  # fixed augmentation seed: same crops every grid
            return torch.stack([x[0] if isinstance(x, tuple) else x for x in items]).to(device)

        self.real = {"A": torch.cat([pick(data.train_a, n), pick(data.test_a, n)]),
                     "B": torch.cat([pick(data.train_b, n), pick(data.test_b, n)])}

    @torch.no_grad()
    def render(self, gens: dict[str, torch.nn.Module]) -> dict[str, np.ndarray]:
        grids = {}
        for x, y in (("A", "B"), ("B", "A")):
            to_y, to_x = gens[f"gen{x}2{y}"], gens[f"gen{y}2{x}"]
            columns = []
            for real in self.real[x].split(1):
                ident, _, ident_hm = to_x(real)
                fake, _, fake_hm = to_y(real)
                cycle, _, cycle_hm = to_x(fake)
                columns.append(sample_column(real[0], ident[0], ident_hm[0], fake[0], fake_hm[0], cycle[0], cycle_hm[0]))
            grids[f"{x}2{y}"] = make_grid(columns)
        return grids


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Training:
    """One training run of a two-domain model: set up (fresh or resumed), then ``run()``."""

    def __init__(self, cfg: UGATITConfig, resume: bool = False, requested: dict | None = None):
        if cfg.out is None:
            raise UserError("--out RUN_DIR is required (where checkpoints, samples and logs go)")
        self.paths = RunPaths(Path(cfg.out))
        self.start_step = 0
        latest = None
        if resume:
            cfg, notes = merge_for_resume(load_saved_config(self.paths), requested or {})
            for note in notes:
                log.info(f"resume: {note}")
            ckpt.remove_stale_temporaries(self.paths.root)
            latest = ckpt.latest_checkpoint(self.paths.root)
            if latest is None:
                log.info(f"resume: no complete checkpoint in {self.paths.root}, starting from step 0")
        elif ckpt.list_checkpoints(self.paths.root):
            raise UserError(f"{self.paths.root} already holds a run: add --resume to continue it, or choose another --out")
        if cfg.data is None:
            raise UserError("--data DIR is required: a folder with trainA, trainB, testA, testB "
                            "(or run `unpaired demo` to train on the built-in emoji data)")
        note = resolve_n_dis(cfg)
        if note:
            log.info(note)
        validate(cfg)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self._configure_torch()
        self.data = open_dataset(Path(cfg.data), cfg.img_size)

        torch.manual_seed(cfg.seed)
        self.nets = {name: net.to(self.device).train() for name, net in build_ugatit(cfg.arch()).items()}
        self.trainer = UGATITTrainer(self.nets, cfg)
        if latest is not None:
            self._restore(latest)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.paths.config) as tmp:
            save_yaml(cfg, tmp)

    def _configure_torch(self) -> None:
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        if self.cfg.benchmark_flag and torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = True

    def _restore(self, folder: Path) -> None:
        states, _ = ckpt.load_weights(folder / ckpt.WEIGHTS)
        for name, net in self.nets.items():
            net.load_state_dict(states[name])
        state = ckpt.load_state(folder)
        self.trainer.load_state_dict(state["trainer"])
        _restore_rng(state["rng"])
        self.start_step = int(state["step"])
        if state["iters"] != self.cfg.iters:
            lr = official_lr(self.start_step, self.cfg.lr, self.cfg.iters, self.cfg.decay_flag)
            self.trainer.set_lr(lr)
            log.info(f"resume: run length changed from {state['iters']} to {self.cfg.iters} iterations; "
                     f"the learning-rate schedule now follows the new total (lr {lr:.3g} at step {self.start_step})")
        log.info(f"resumed from {folder} (step {self.start_step})")

    def _stream(self, dataset, stream_id: int) -> DomainStream:
        workers = default_num_workers() if self.cfg.num_workers is None else self.cfg.num_workers
        return DomainStream(dataset, self.cfg.batch_size, self.cfg.seed, stream_id, start_batch=self.start_step,
                            num_workers=workers, pin_memory=self.device.type == "cuda")

    def save(self, step: int) -> Path:
        """Checkpoint ``step``; on a write failure (disk full) stop and point at the one kept."""
        state = {"step": step, "iters": self.cfg.iters, "trainer": self.trainer.state_dict(), "rng": _rng_state()}
        try:
            return ckpt.save_checkpoint(self.paths.root, step, self.nets, self.cfg.model, self.cfg.arch(), state,
                                        keep=self.cfg.keep_checkpoints)
        except OSError as exc:
            last = ckpt.latest_checkpoint(self.paths.root)
            raise UserError(f"could not write the checkpoint of step {step} ({exc.strerror or exc}); "
                            f"previous checkpoint kept: {last or 'none'}") from None

    def run(self) -> Path:
        cfg = self.cfg
        if self.start_step >= cfg.iters:
            log.info(f"nothing to do: the run is at step {self.start_step} of {cfg.iters} (raise --iters to extend it)")
            return self.paths.root
        grids = SampleGrids(self.data, cfg.n_samples, self.device)
        writer = SummaryWriter(str(self.paths.logs))
        stream_a, stream_b = self._stream(self.data.train_a, 0), self._stream(self.data.train_b, 1)
        bar = tqdm(total=cfg.iters, initial=self.start_step, desc="train", dynamic_ncols=True)
        tick, tick_step = time.perf_counter(), self.start_step
        try:
            for step, real_a, real_b in zip(range(self.start_step + 1, cfg.iters + 1), stream_a, stream_b):
                self.trainer.decay_lr(step)
                result = self.trainer.step(real_a.to(self.device, non_blocking=True),
                                           real_b.to(self.device, non_blocking=True))
                bar.update(1)
                last = step == cfg.iters
                if step % cfg.log_freq == 0 or step % cfg.save_freq == 0 or last:
                    losses = result.floats()
                    self._check_finite(step, losses)
                    speed = (step - tick_step) / (time.perf_counter() - tick)
                    tick, tick_step = time.perf_counter(), step
                    self._log(writer, step, losses, speed)
                    bar.set_postfix(d=f"{losses['Discriminator_loss']:.3f}", g=f"{losses['Generator_loss']:.3f}")
                if step % cfg.print_freq == 0 or last:
                    self._write_grids(writer, grids, step)
                if step % cfg.save_freq == 0 or last:
                    self.save(step)
        finally:
            bar.close()
            writer.close()
        log.info(f"done: {self.paths.root} (checkpoints in {ckpt.checkpoint_dir(self.paths.root)}, "
                 f"samples in {self.paths.samples})")
        return self.paths.root

    def _check_finite(self, step: int, losses: dict[str, float]) -> None:
        bad = sorted(name for name, value in losses.items() if not math.isfinite(value))
        if bad:
            last = ckpt.latest_checkpoint(self.paths.root)
            kept = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
            raise UserError(f"training diverged at step {step}: {', '.join(bad[:3])} is not finite; "
                            f"stopped without saving ({kept})")

    def _log(self, writer: SummaryWriter, step: int, losses: dict[str, float], speed: float) -> None:
        for name, value in losses.items():
            writer.add_scalar(f"loss/{name}", value, step)
        writer.add_scalar("lr", self.trainer.lr, step)
        for name, value in rho_stats(self.nets).items():
            writer.add_scalar(f"rho/{name}", value, step)
        writer.add_scalar("speed/it_per_s", speed, step)

    def _write_grids(self, writer: SummaryWriter, grids: SampleGrids, step: int) -> None:
        gens = {name: self.nets[name].eval() for name in ("genA2B", "genB2A")}
        try:
            for direction, grid in grids.render(gens).items():
                save_png(grid, self.paths.samples / f"{direction}_{step:07d}.png")
                writer.add_image(f"samples/{direction}", grid, step, dataformats="HWC")
        finally:
            for net in gens.values():
                net.train()
