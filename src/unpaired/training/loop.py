"""The training loop shared by every model: run directory, resume, logs, grids, checkpoints, DDP.

It knows nothing of a model's losses: the family's recipe (``training.contracts.Recipe``) builds
the networks, the trainer and the batches; the loop calls ``trainer.step(*batch)``, logs what
comes back, asks the recipe for sample grids and checkpoints everything. Resuming is exact: the
data streams are a pure function of (seed, step), and the checkpoint holds the networks,
optimisers (with the current learning rate) and RNG states, so a run that is killed and resumed
produces the same losses as one that never stopped (CPU, deterministic).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import checkpoint as ckpt
from .. import guard
from .. import options as opt
from ..data.images import dataset_folders
from ..data.streams import default_num_workers
from ..errors import UserError, WriteError, explain
from ..files import write_text_atomic
from ..models.registry import family
from ..run import RunDir, RunLock
from ..runtime import Runtime
from ..viz import save_png
from .events import EventLog
from .speed import SPEED_OPTIONS

log = logging.getLogger("unpaired")
BEST = "best.json"  # checkpoints/best/: the metric, its value and the step of the best weights


def load_saved_options(run: RunDir):
    """The run's resolved options, as the options class of the model family it was made with."""
    if not run.is_run():
        raise UserError(f"cannot resume: {run.config} not found (is {run.root} a run directory?)")
    raw = run.read_config()
    return opt.build(family(run.model()).options, (str(run.config), raw))


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
    """One training run: set up fresh (``Training(opts)``) or resumed (``Training.resume``), then ``run()``.

    From set-up to the end of ``run()`` the main process holds the run directory's lock
    (``run.RunLock``), so two trainings never write into one run. ``inputs`` are files the
    command read besides those the options name (its --config file): no output may replace them.
    """

    def __init__(self, opts: Any, *, resumed: bool = False, inputs: Iterable[Path] = ()):
        if opts.out is None:
            raise UserError("--out RUN_DIR is required (where checkpoints, samples and logs go)")
        self.run_dir = RunDir(Path(opts.out))
        self.start_step = 0
        self.lock: RunLock | None = None
        self.recipe = family(opts.model).recipe()
        opts, notes = self.recipe.prepare(opts)
        for note in notes:
            log.info(note)
        self.rt = Runtime.from_environment(opts.device)
        if self.rt.distributed and not self.recipe.supports_distributed:
            raise UserError(f"--model {opts.model} trains in a single process; run it without torchrun")
        self.device = self.rt.device
        self.data, opts = self.recipe.open_data(opts)
        self.opts = opts
        self._check_run_dir(resumed, [*dataset_folders(self.data), *opt.read_paths(opts), *inputs])
        self._set_up(opts, resumed)
        self.lock = RunLock(self.run_dir) if self.rt.is_main else None  # before the first write, after every refusal
        if self.rt.is_main:
            try:
                ckpt.remove_leftovers(self.run_dir.checkpoints)
                self.run_dir.write_config(opts)
            except BaseException:
                self.release()
                raise

    def _check_run_dir(self, resumed: bool, inputs: list[Path]) -> None:
        """Refuse a run directory whose files are not this run's to write (see ``guard``).

        A fresh run may take over a folder an earlier attempt left before its first checkpoint
        (its config.yaml is unpaired train's), never a run with checkpoints or a folder of the user's.
        """
        run = self.run_dir
        if not resumed and ckpt.list_checkpoints(run.checkpoints):
            raise UserError(f"{run.root} already holds a run: add --resume to continue it, or choose another --out")
        ours = resumed or run.config_is_ours()
        guard.check(inputs, files=[run.config], folders=[run.checkpoints, run.samples, run.logs],
                    ours=lambda path: ours)

    def _set_up(self, opts: Any, resumed: bool) -> None:
        """Networks and trainer, restored from the newest usable checkpoint on a resume (nothing is written)."""
        # config.yaml keeps the options as given ("auto" is chosen again on the device a resume runs on)
        run_opts = self.recipe.resolve_speed(opts, self.device)
        log.info("computing with " + ", ".join(f"{name}={getattr(run_opts, name)}" for name in SPEED_OPTIONS))

        torch.manual_seed(opts.seed)  # same seed on every rank: identical initial weights
        self.nets = {name: net.to(self.device).train() for name, net in self.recipe.build_nets(opts).items()}
        self.recipe.accelerate(self.nets, run_opts, self.device)
        self.trainer = self.recipe.make_trainer(self._wrap(self.nets), run_opts, self.nets)
        if resumed:
            self._resume()

    @classmethod
    def resume(cls, out: Path | str, requested: dict[str, Any] | None = None,
               source: str = "the command line", inputs: Iterable[Path] = ()) -> Training:
        """Continue the run in ``out`` from its newest complete checkpoint, with the ``requested``
        changes of options a resumed run may change (others are refused)."""
        run = RunDir(Path(out))
        opts, notes = opt.changed(load_saved_options(run), {**(requested or {}), "out": str(out)}, source)
        for note in notes:
            log.info(f"resume: {note}")
        return cls(opts, resumed=True, inputs=inputs)

    def release(self) -> None:
        """Give up the run directory's lock (``run()`` does at its end)."""
        if self.lock is not None:
            self.lock.release()

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

    def _resume(self) -> None:
        """Continue from the newest checkpoint that restores (an older one when the newest is damaged)."""
        found = ckpt.newest(self.run_dir.checkpoints, self._restore)
        if found is None:
            log.info(f"resume: no complete checkpoint in {self.run_dir.root}, starting from step 0")
            return
        folder, state = found
        self.start_step = state["step"]
        if state["iters"] != self.opts.iters:
            change = self.recipe.reschedule(self.trainer, self.opts, self.start_step)
            log.info(f"resume: run length changed from {state['iters']} to {self.opts.iters} iterations; {change}")
        log.info(f"resumed from {folder} (step {self.start_step})")

    def _restore(self, folder: Path) -> dict[str, Any]:
        """Load the networks, optimisers and RNG of checkpoint ``folder``; its training state.

        A checkpoint that does not fit (truncated, foreign, another architecture) is a UserError
        naming the file; restoring an older one afterwards overwrites whatever was loaded.
        """
        states, _ = ckpt.load_weights(folder / ckpt.WEIGHTS)
        for name, net in self.nets.items():
            ckpt.load_strict(net, states.get(name, {}), folder / ckpt.WEIGHTS, name)
        state = ckpt.load_state(folder)
        try:
            self.trainer.load_state_dict(state["trainer"])
            _restore_rng(state["rng"])
        except (KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as exc:  # foreign states
            raise UserError(f"{folder / ckpt.STATE} does not fit this run ({type(exc).__name__}: {exc})") from None
        return state

    def save(self, step: int) -> Path:
        """Checkpoint ``step``; on a write failure (disk full) stop and point at the one kept."""
        state = {"step": step, "iters": self.opts.iters, "trainer": self.trainer.state_dict(), "rng": _rng_state()}
        try:
            return ckpt.save_checkpoint(self.run_dir.checkpoints, step, self.nets, self.opts.model, self.opts.arch, state,
                                        keep=self.opts.keep_checkpoints)
        except WriteError as exc:
            last = self.run_dir.latest_checkpoint()
            raise UserError(f"could not write the checkpoint of step {step}: {explain(exc.error)}; "
                            f"previous checkpoint kept: {last or 'none'}") from None

    def run(self) -> Path:
        try:
            return self._train()
        finally:
            self.release()

    def _train(self) -> Path:
        opts = self.opts
        if self.start_step >= opts.iters:
            log.info(f"nothing to do: the run is at step {self.start_step} of {opts.iters} (raise --iters to extend it)")
            return self.run_dir.root
        main = self.rt.is_main
        grids = self.recipe.grids(self.data, opts, self.device) if main else None
        evaluation = self.recipe.evaluation(opts, self.device) if main else None
        writer = EventLog(self.run_dir.logs) if main else None
        workers = default_num_workers() if opts.num_workers is None else opts.num_workers
        batches = self.recipe.batches(self.data, opts, self.start_step, self.rt.rank, self.rt.world_size, workers,
                                      self.device)
        bar = tqdm(total=opts.iters, initial=self.start_step, desc="train", dynamic_ncols=True, disable=not main)
        tick, tick_step = time.perf_counter(), self.start_step
        try:
            for step, batch in zip(range(self.start_step + 1, opts.iters + 1), batches):
                self.trainer.begin_step(step)
                result = self.trainer.step(*batch)
                bar.update(1)
                last = step == opts.iters
                if step % opts.log_freq == 0 or step % opts.save_freq == 0 or last:
                    losses = self._mean_losses(result)
                    self._check_finite(step, losses)
                    speed = (step - tick_step) / (time.perf_counter() - tick)
                    tick, tick_step = time.perf_counter(), step
                    if main:
                        self._log(writer, step, losses, speed)
                        bar.set_postfix({k.split("/")[-1]: f"{losses[k]:.3f}" for k in self.recipe.progress_keys
                                         if k in losses})  # a step may skip a term (TF's n_critic)
                if main and (step % opts.print_freq == 0 or last):
                    self._write_grids(writer, grids, step)
                if main and (step % opts.save_freq == 0 or last):
                    self.save(step)
                if evaluation and (step % opts.eval_freq == 0 or last):
                    self._evaluate(writer, evaluation, step)
        except BaseException:
            if writer:
                writer.close(quiet=True)
            raise
        else:
            if writer:
                writer.close()
        finally:
            bar.close()
            self.rt.shutdown()
        if main:
            log.info(f"done: {self.run_dir.root} (checkpoints in {self.run_dir.checkpoints}, "
                     f"samples in {self.run_dir.samples})")
        return self.run_dir.root

    def _mean_losses(self, result) -> dict[str, float]:
        """Loss terms averaged over all processes (every rank calls this at the same steps)."""
        values = self.rt.mean(torch.stack([v.float() for v in result.losses.values()]))
        return dict(zip(result.losses, values.tolist()))

    def _check_finite(self, step: int, losses: dict[str, float]) -> None:
        bad = sorted(name for name, value in losses.items() if not math.isfinite(value))
        if bad:
            last = self.run_dir.latest_checkpoint()
            kept = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
            raise UserError(f"training diverged at step {step}: {', '.join(bad[:3])} is not finite; "
                            f"stopped without saving ({kept})")

    def _log(self, writer: EventLog, step: int, losses: dict[str, float], speed: float) -> None:
        for name, value in losses.items():
            writer.scalar(f"loss/{name}", value, step)
        writer.scalar("lr", self.trainer.lr, step)
        for name, value in self.recipe.scalars(self.nets).items():
            writer.scalar(name, value, step)
        writer.scalar("speed/it_per_s", speed, step)

    def _evaluate(self, writer: EventLog, evaluation, step: int) -> None:
        """Log every score; when the chosen one improves, keep these weights as checkpoints/best."""
        scores, value = evaluation(self.nets)
        for name, score in scores.items():
            writer.scalar(f"eval/{name}", score, step)
        best = self._best_so_far()
        better = best is None or (value > best if evaluation.higher_is_better else value < best)
        log.info(f"eval at step {step}: {evaluation.metric} {value:.4g}" + (" (best so far)" if better else ""))
        if better:
            best_file = self.run_dir.best / BEST
            ckpt.save_weights(best_file.parent / ckpt.WEIGHTS, ckpt.states_of(self.nets), self.opts.model, self.opts.arch,
                              step=step)
            write_text_atomic(best_file, json.dumps({"metric": evaluation.metric, "value": value, "step": step}))

    def _best_so_far(self) -> float | None:
        """The score of checkpoints/best, or None when there is none (or its record is unreadable)."""
        path = self.run_dir.best / BEST
        try:
            value = json.loads(path.read_text(encoding="utf-8"))["value"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(f"{path} is unreadable ({exc}); the next evaluation replaces the best checkpoint")
            return None
        return value if isinstance(value, (int, float)) else None

    def _write_grids(self, writer: EventLog, grids, step: int) -> None:
        for name, grid in grids.render(self.nets).items():
            save_png(grid, self.run_dir.samples / f"{name}_{step:07d}.png")
            writer.image(f"samples/{name}", grid, step)
