"""Time one full U-GAT-IT training iteration (D step + G step) in several modes, in one process.

Modes (``--modes``, comma-separated):

* ``reference``: the official iteration's work: the D step back-propagates through both
  generators (fakes not detached), the G step translates both batches again, and the G backward
  also fills the discriminators' gradients. Same numbers as ``faithful`` (see ``loss_rel_diff``).
* ``faithful``: ``UGATITTrainer`` in fp32 eager, the mode the parity tests check.
* ``fast``: what ``unpaired train`` uses by default on this device (``resolve_speed`` + ``accelerate``).
* ``+``-joined parts on top of faithful (or of ``fast`` when it comes first), for ablations:
  ``sn_outputs``, ``bf16``, ``fp16``, ``channels_last``, ``fused_adam``, ``cudnn_benchmark``,
  ``compile`` (torch.compile mode ``default``) or ``compile=MODE``, ``lean`` (``--memory lean``);
  e.g. ``sn_outputs+compile``, ``fast+lean``.

Every mode starts from the same initial weights and sees the same batches. After the warm-up
(which includes compiling; its time is reported), the timed iterations run round-robin over the
modes, so a machine whose load changes during the run slows every mode alike; medians are
reported. Peak memory comes from one extra iteration per mode: on CUDA ``max_memory_allocated``;
on the CPU the process's peak resident set (VmHWM, reset through /proc/self/clear_refs after
malloc_trim hands freed heap back), with the part the iteration added to what was resident before.

    python benchmarks/train_step.py --json gpu.json            # GPU: 256 px, ch 64, batch 1 and 4
    python benchmarks/train_step.py --img-size 64 --ch 16 --n-res 2 --batch-sizes 1 --iters 5 \\
        --warmup 2 --threads 1                                  # CPU: a few minutes
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from unpaired.models.ugatit.networks import build_ugatit
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions, resolve_n_dis
from unpaired.models.ugatit.train import UGATITTrainer
from unpaired.runtime import resolve_device
from unpaired.training.contracts import StepResult
from unpaired.training.speed import accelerate, configure_kernels, resolve_speed


class OfficialIteration(UGATITTrainer):
    """The official ``UGATIT.train()`` iteration's amount of work, for timing (same numbers).

    The D step keeps the fakes attached (its backward runs through both generators, whose grads
    the G step then zeroes), the G step translates both batches again, and the discriminators stay
    trainable during the G backward (their grads are computed, then zeroed by the next D step).
    """

    def _set_discriminators_trainable(self, trainable: bool) -> None:
        pass

    def step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> StepResult:
        fakes = self.make_fakes(real_A, real_B)
        self.D_optim.zero_grad()
        d_out = {**self._judge("real", real_A, "A", self.nets), **self._judge("real", real_B, "B", self.nets),
                 **self._judge("fake", fakes["fake_B2A"], "A", self.nets),
                 **self._judge("fake", fakes["fake_A2B"], "B", self.nets)}
        d_losses = self._discriminator_losses(d_out)
        d_losses["Discriminator_loss"].backward()
        self.D_optim.step()
        g_losses = self.generator_step(self.make_fakes(real_A, real_B))
        return StepResult({k: v.detach() for k, v in {**d_losses, **g_losses}.items()})


@dataclass
class Mode:
    name: str
    opts: UGATITOptions
    official: bool = False


def parse_mode(name: str, base: UGATITOptions, device: torch.device) -> Mode:
    """A mode name → the resolved options it trains with (see the module docstring)."""
    faithful = resolve_speed(replace(base, faithful=True), device)
    if name in ("reference", "faithful"):
        return Mode(name, faithful, official=name == "reference")
    first, *parts = name.split("+")
    if first == "fast":
        start = resolve_speed(base, device)
    else:
        start, parts = replace(faithful, faithful=False), [first, *parts]
    changes = {}
    for part in parts:
        if part in ("bf16", "fp16"):
            changes["precision"] = part
        elif part in ("sn_outputs", "channels_last", "fused_adam", "cudnn_benchmark"):
            changes["benchmark_flag" if part == "cudnn_benchmark" else part] = True
        elif part.split("=")[0] == "compile":
            changes["compile"] = part.partition("=")[2] or "default"
        elif part == "lean":
            changes["memory"] = "lean"
        else:
            raise SystemExit(f"unknown mode part {part!r} in {name!r}")
    return Mode(name, replace(start, **changes))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_memory_mb(run, device: torch.device) -> tuple[float, float]:
    """(peak, peak − resident before) in MiB while ``run()`` executes once."""
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak / 2**20, (peak - before) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return float("nan"), float("nan")
    before = _proc_status_mb("VmRSS")
    run()
    peak = _proc_status_mb("VmHWM")
    return peak, peak - before


def hardware(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    return info


def loss_rel_diff(losses: list[dict[str, float]], ref: list[dict[str, float]]) -> float:
    """Largest relative difference of the total D and G losses from the reference run's, over all steps."""
    return max(abs(a[k] - b[k]) / abs(b[k]) for a, b in zip(losses, ref)
               for k in ("Discriminator_loss", "Generator_loss"))


def bench_case(base: UGATITOptions, modes: list[str], batch: int, args, device: torch.device) -> list[dict]:
    """All modes on one (variant, batch) case; one result row per mode."""
    torch.manual_seed(args.seed)
    initial = {name: net.to(device).train() for name, net in build_ugatit(base.arch).items()}
    generator = torch.Generator().manual_seed(args.seed + 1)
    batches = [tuple((torch.rand(batch, base.arch.img_ch, base.arch.img_size, base.arch.img_size, generator=generator) * 2 - 1)
                     .to(device) for _ in range(2)) for _ in range(args.warmup + args.iters + 1)]
    trainers, warmup_s, losses, times = {}, {}, {}, {name: [] for name in modes}

    def step(name: str, i: int) -> float:
        """One iteration of mode ``name`` on batch ``i``; returns its wall time in seconds."""
        configure_kernels(trainers[name].opts, device)  # process-wide flags: each mode sets its own
        synchronize(device)
        start = time.perf_counter()
        result = trainers[name].step(*batches[i])
        synchronize(device)
        losses.setdefault(name, []).append({k: v.item() for k, v in result.losses.items()})
        return time.perf_counter() - start

    for name in modes:
        mode = parse_mode(name, base, device)
        nets = accelerate(copy.deepcopy(initial), mode.opts, device)
        trainers[name] = (OfficialIteration if mode.official else UGATITTrainer)(nets, mode.opts)
        warmup_s[name] = sum(step(name, i) for i in range(args.warmup))
        print(f"  {name}: warm-up {warmup_s[name]:.1f} s ({mode.opts.precision}, compile {mode.opts.compile}, "
              f"channels_last {mode.opts.channels_last}, fused_adam {mode.opts.fused_adam}, "
              f"sn_outputs {mode.opts.sn_outputs}, memory {mode.opts.memory})", flush=True)
    for i in range(args.warmup, args.warmup + args.iters):
        for name in modes:
            times[name].append(step(name, i))
    rows = []
    for name in modes:
        peak, added = peak_memory_mb(lambda: step(name, len(batches) - 1), device)
        ms = statistics.median(times[name]) * 1000
        opts = trainers[name].opts
        rows.append({"variant": "light" if base.arch.light else "full", "img_size": base.arch.img_size,
                     "ch": base.arch.ch, "n_res": base.arch.n_res, "batch": batch, "mode": name, "precision": opts.precision,
                     "compile": opts.compile, "channels_last": opts.channels_last, "fused_adam": opts.fused_adam,
                     "sn_outputs": opts.sn_outputs, "memory": opts.memory,
                     "cudnn_benchmark": opts.benchmark_flag, "ms_median": ms,
                     "ms_all": [t * 1000 for t in times[name]], "it_per_s": 1000 / ms,
                     "images_per_s": 1000 * batch / ms, "warmup_s": warmup_s[name], "peak_mem_mb": peak,
                     "iteration_mem_mb": added,
                     "loss_rel_diff": loss_rel_diff(losses[name], losses.get("faithful", losses[name]))})
    by_mode = {row["mode"]: row for row in rows}
    for row in rows:
        for ref in ("faithful", "reference"):
            if ref in by_mode:
                row[f"speedup_vs_{ref}"] = by_mode[ref]["ms_median"] / row["ms_median"]
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"{'variant':7s} {'batch':>5s} {'mode':28s} {'ms/it':>9s} {'it/s':>7s} {'vs faithful':>11s} "
          f"{'vs ref':>7s} {'peak MiB':>9s} {'+iter MiB':>9s} {'loss diff':>9s}")
    for r in rows:
        print(f"{r['variant']:7s} {r['batch']:5d} {r['mode']:28s} {r['ms_median']:9.1f} {r['it_per_s']:7.3f} "
              f"{r.get('speedup_vs_faithful', float('nan')):10.2f}x {r.get('speedup_vs_reference', float('nan')):6.2f}x "
              f"{r['peak_mem_mb']:9.0f} {r['iteration_mem_mb']:9.0f} {r['loss_rel_diff']:9.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--ch", type=int, default=64)
    parser.add_argument("--n-res", type=int, default=4)
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated")
    parser.add_argument("--variants", default="light,full", help="comma-separated: light, full")
    parser.add_argument("--modes", default="reference,faithful,fast", help="comma-separated, see above")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations per mode first (compiles)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    modes = args.modes.split(",")
    info = hardware(device)
    print(json.dumps(info))
    rows = []
    for variant in args.variants.split(","):
        arch = UGATITArch(light=variant == "light", img_size=args.img_size, ch=args.ch, n_res=args.n_res)
        base, _ = resolve_n_dis(UGATITOptions(arch=arch))
        for batch in map(int, args.batch_sizes.split(",")):
            print(f"{variant}, batch {batch}:", flush=True)
            rows += bench_case(base, modes, batch, args, device)
            print_rows(rows[-len(modes):])
    info["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps({"hardware": info, "args": vars(args) | {"json": str(args.json)},
                                         "results": rows}, indent=1))
    print("\nall cases:")
    print_rows(rows)


if __name__ == "__main__":
    main()
