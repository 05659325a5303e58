"""Train U-GAT-IT for a few hundred iterations on the embedded demo data in several precisions.

Checks that reduced precision trains as fp32 does: every loss term stays finite, and the loss
averages over the last ``--window`` iterations stay close to the faithful fp32 run's. Every mode
starts from the same weights and sees the same batches.

Modes (``--modes``): ``faithful`` (fp32, exactly the official computation), ``fp32``, ``bf16``,
``fp16`` (autocast with a GradScaler). All but ``faithful`` use this device's other speed
defaults (``resolve_speed``: on a GPU compiled and channels_last, fused Adam everywhere).

    python benchmarks/precision_compare.py --json precision.json          # CPU: ~16 minutes (bf16, fp16 slow)
    python benchmarks/precision_compare.py --img-size 128 --ch 32 --iters 1000   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from unpaired.data.streams import DomainStream
from unpaired.data.two_domain import demo_dataset_path
from unpaired.models.ugatit.data import open_dataset
from unpaired.models.ugatit.networks import build_ugatit
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions, resolve_n_dis
from unpaired.models.ugatit.train import UGATITTrainer
from unpaired.runtime import resolve_device
from unpaired.training.speed import accelerate, resolve_speed

REPORTED = ("Discriminator_loss", "Generator_loss", "G_recon_loss_A", "G_identity_loss_A", "G_cam_loss_A",
            "G_ad_loss_GA", "D_ad_loss_GA")


def demo_batches(img_size: int, batch: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` (real_A, real_B) training batches of the demo data, decoded once for every mode."""
    data = open_dataset(demo_dataset_path(), img_size)
    streams = [DomainStream(data.train_a, batch, seed, 0), DomainStream(data.train_b, batch, seed, 1)]
    return [pair for pair, _ in zip(zip(*streams), range(count))]


def train(opts: UGATITOptions, initial: dict, batches: list, device: torch.device) -> dict:
    """Train a copy of ``initial`` on ``batches``; the per-step losses and where they stopped being finite."""
    nets = accelerate(copy.deepcopy(initial), opts, device)
    trainer = UGATITTrainer(nets, opts)
    curve, first_bad, start = [], None, time.perf_counter()
    for step, (real_a, real_b) in enumerate(batches, 1):
        result = trainer.step(real_a.to(device), real_b.to(device))
        losses = {name: value.item() for name, value in result.losses.items()}
        curve.append(losses)
        if first_bad is None and not all(math.isfinite(v) for v in losses.values()):
            first_bad = step
    return {"curve": curve, "first_non_finite_step": first_bad, "seconds": time.perf_counter() - start,
            "loss_scale": trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None}


def summarise(run: dict, window: int) -> dict[str, float]:
    tail = run["curve"][-window:]
    return {k: statistics.fmean(step[k] for step in tail) for k in REPORTED}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--ch", type=int, default=8)
    parser.add_argument("--n-res", type=int, default=2)
    parser.add_argument("--variant", choices=["light", "full"], default="light")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--window", type=int, default=50, help="average the last N iterations")
    parser.add_argument("--modes", default="faithful,fp32,bf16,fp16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    arch = UGATITArch(light=args.variant == "light", img_size=args.img_size, ch=args.ch, n_res=args.n_res)
    base, _ = resolve_n_dis(UGATITOptions(arch=arch, batch_size=args.batch_size, iters=args.iters))
    torch.manual_seed(args.seed)
    initial = {name: net.to(device).train() for name, net in build_ugatit(base.arch).items()}
    batches = demo_batches(args.img_size, args.batch_size, args.iters, args.seed)
    runs = {}
    for mode in args.modes.split(","):
        opts = resolve_speed(replace(base, faithful=True) if mode == "faithful" else replace(base, precision=mode),
                             device)
        runs[mode] = train(opts, initial, batches, device) | {"precision": opts.precision, "compile": opts.compile,
                                                               "channels_last": opts.channels_last}
        runs[mode]["final"] = summarise(runs[mode], args.window)
        print(f"{mode}: {runs[mode]['seconds'] / args.iters * 1000:.0f} ms/it, first non-finite step "
              f"{runs[mode]['first_non_finite_step']}, final {runs[mode]['final']}", flush=True)
    ref = runs.get("faithful", next(iter(runs.values())))["final"]
    print(f"\nmean of the last {args.window} of {args.iters} iterations (relative difference to faithful):")
    print(f"{'loss':20s}" + "".join(f"{mode:>20s}" for mode in runs))
    for key in REPORTED:
        cells = "".join(f"{run['final'][key]:10.4f} ({(run['final'][key] - ref[key]) / abs(ref[key]):+6.1%})"
                        for run in runs.values())
        print(f"{key:20s}{cells}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "torch": torch.__version__,
                                         "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
