"""The training loop shared by every model: run directory, resume, logs, grids, checkpoints, DDP.

It knows nothing of a model's losses: a recipe (``train/recipes.py``) builds the networks, the
trainer and the batches; the loop calls ``trainer.step(*batch)``, logs what comes back, asks the
recipe for sample grids and checkpoints everything. Resuming is exact: the data streams are a
pure function of (seed, step), and the checkpoint holds the networks, optimisers (with the
current learning rate) and RNG states, so a run that is killed and resumed produces the same
losses as one that never stopped (CPU, deterministic).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..config import read_yaml_mapping, save_yaml
from ..data import default_num_workers
from ..errors import UserError
from ..files import atomic_path, write_text_atomic
from ..runtime import Runtime
from ..viz import save_png
from .recipes import recipe_for
from .speed import SPEED_OPTIONS

log = logging.getLogger("unpaired")

# Options that may change when a run is resumed; every other option is part of the run's identity.
# The speed options (train/speed.py) change how a run computes, never what it learns.
RESUMABLE_OPTIONS = {"iters", "print_freq", "save_freq", "log_freq", "keep_checkpoints", "device", "num_workers",
                     "faithful", "precision", "compile", "channels_last", "fused_adam", "benchmark_flag",
                     "deterministic", "data", "n_samples", "out", "val_batch_size", "eval_freq", "eval_metric",
                     "inception_weights"}


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


def load_saved_config(paths: RunPaths):
    """The run's resolved config, as the dataclass of the model it was made with."""
    if not paths.config.is_file():
        raise UserError(f"cannot resume: {paths.config} not found (is {paths.root} a run directory?)")
    raw = read_yaml_mapping(paths.config)
    return recipe_for(raw.get("model", "ugatit")).config_cls(**raw)


def merge_for_resume(saved, requested: dict):
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
    return type(saved)(**merged), notes


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
    """One training run: set up (fresh or resumed) from a model's config, then ``run()``."""

    def __init__(self, cfg, resume: bool = False, requested: dict | None = None):
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
        self.recipe = recipe_for(cfg.model)
        for note in self.recipe.prepare(cfg):
            log.info(note)
        self.cfg = cfg
        self.rt = Runtime.from_environment(cfg.device)
        if self.rt.distributed and not self.recipe.supports_distributed:
            raise UserError(f"--model {cfg.model} trains in a single process; run it without torchrun")
        self.device = self.rt.device
        self.data = self.recipe.open_data(cfg)
        # config.yaml keeps the options as given ("auto" is chosen again on the device a resume runs on)
        run_cfg = self.recipe.resolve_speed(cfg, self.device)
        self._configure_torch(run_cfg)

        torch.manual_seed(cfg.seed)  # same seed on every rank: identical initial weights
        self.nets = {name: net.to(self.device).train() for name, net in self.recipe.build_nets(cfg, self.data).items()}
        self.recipe.accelerate(self.nets, run_cfg, self.device)
        self.trainer = self.recipe.make_trainer(self._wrap(self.nets), run_cfg, self.nets)
        if latest is not None:
            self._restore(latest)
        if self.rt.is_main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.paths.config) as tmp:
                save_yaml(cfg, tmp)

    def _wrap(self, nets: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
        """DistributedDataParallel around every trained network when several processes train together.

        Buffers are not synchronised per forward: the only ones are the spectral-norm vectors,
        which depend on the (synchronised) weights alone and so stay identical on every rank.
        """
        if not self.rt.distributed:
            return nets
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [self.device.index] if self.device.type == "cuda" else None
        return {name: DDP(net, device_ids=ids, forward_sync_buffers=False) for name, net in nets.items()}

    def _configure_torch(self, run_cfg) -> None:
        if run_cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        if run_cfg.benchmark_flag and torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = True
        if all(hasattr(run_cfg, name) for name in SPEED_OPTIONS):
            log.info("computing with " + ", ".join(f"{name}={getattr(run_cfg, name)}" for name in SPEED_OPTIONS))

    def _restore(self, folder: Path) -> None:
        states, _ = ckpt.load_weights(folder / ckpt.WEIGHTS)
        for name, net in self.nets.items():
            net.load_state_dict(states[name])
        state = ckpt.load_state(folder)
        self.trainer.load_state_dict(state["trainer"])
        _restore_rng(state["rng"])
        self.start_step = int(state["step"])
        if state["iters"] != self.cfg.iters:
            change = self.recipe.reschedule(self.trainer, self.cfg, self.start_step)
            log.info(f"resume: run length changed from {state['iters']} to {self.cfg.iters} iterations; {change}")
        log.info(f"resumed from {folder} (step {self.start_step})")

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
        main = self.rt.is_main
        grids = self.recipe.grids(self.data, cfg, self.device) if main else None
        evaluation = self.recipe.evaluation(cfg, self.device) if main else None
        writer = SummaryWriter(str(self.paths.logs)) if main else None
        workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
        batches = self.recipe.batches(self.data, cfg, self.start_step, self.rt.rank, self.rt.world_size, workers,
                                      self.device)
        bar = tqdm(total=cfg.iters, initial=self.start_step, desc="train", dynamic_ncols=True, disable=not main)
        tick, tick_step = time.perf_counter(), self.start_step
        try:
            for step, batch in zip(range(self.start_step + 1, cfg.iters + 1), batches):
                self.trainer.decay_lr(step)
                result = self.trainer.step(*batch)
                bar.update(1)
                last = step == cfg.iters
                if step % cfg.log_freq == 0 or step % cfg.save_freq == 0 or last:
                    losses = self._mean_losses(result)
                    self._check_finite(step, losses)
                    speed = (step - tick_step) / (time.perf_counter() - tick)
                    tick, tick_step = time.perf_counter(), step
                    if main:
                        self._log(writer, step, losses, speed)
                        bar.set_postfix({k.split("/")[-1]: f"{losses[k]:.3f}" for k in self.recipe.progress_keys})
                if main and (step % cfg.print_freq == 0 or last):
                    self._write_grids(writer, grids, step)
                if main and (step % cfg.save_freq == 0 or last):
                    self.save(step)
                if evaluation and (step % cfg.eval_freq == 0 or last):
                    self._evaluate(writer, evaluation, step)
        finally:
            bar.close()
            if writer:
                writer.close()
            self.rt.shutdown()
        if main:
            log.info(f"done: {self.paths.root} (checkpoints in {ckpt.checkpoint_dir(self.paths.root)}, "
                     f"samples in {self.paths.samples})")
        return self.paths.root

    def _mean_losses(self, result) -> dict[str, float]:
        """Loss terms averaged over all processes (every rank calls this at the same steps)."""
        values = self.rt.mean(torch.stack([v.float() for v in result.losses.values()]))
        return dict(zip(result.losses, values.tolist()))

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
        for name, value in self.recipe.scalars(self.nets).items():
            writer.add_scalar(name, value, step)
        writer.add_scalar("speed/it_per_s", speed, step)

    def _evaluate(self, writer: SummaryWriter, evaluation, step: int) -> None:
        """Log every score; when the chosen one improves, keep these weights as checkpoints/best."""
        scores, value = evaluation(self.nets)
        for name, score in scores.items():
            writer.add_scalar(f"eval/{name}", score, step)
        best_file = ckpt.checkpoint_dir(self.paths.root) / "best" / "best.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        better = best is None or (value > best["value"] if evaluation.higher_is_better else value < best["value"])
        log.info(f"eval at step {step}: {evaluation.metric} {value:.4g}" + (" (best so far)" if better else ""))
        if better:
            ckpt.save_weights(best_file.parent / ckpt.WEIGHTS, self.nets, self.cfg.model, self.cfg.arch(), step=step)
            write_text_atomic(best_file, json.dumps({"metric": evaluation.metric, "value": value, "step": step}))

    def _write_grids(self, writer: SummaryWriter, grids, step: int) -> None:
        for name, grid in grids.render(self.nets).items():
            save_png(grid, self.paths.samples / f"{name}_{step:07d}.png")
            writer.add_image(f"samples/{name}", grid, step, dataformats="HWC")
