"""Parameters and time per training iteration of model families side by side, through their recipes.

Every family is built from its own options (the same flat values for all: size, width, depth),
trained on the same random batches for ``--warmup`` + ``--iters`` iterations, timed round-robin
(so a machine whose load changes slows every family alike), medians reported. The trainers run
as ``unpaired train`` runs them (the family's default speed settings; ``--faithful`` for the
official way).

    python benchmarks/family_step.py --models ugatit,ugatit_tf --img-size 128 --ch 64 --light --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from unpaired import options as opt
from unpaired.models.registry import family
from unpaired.runtime import resolve_device


def build(name: str, values: dict, device: torch.device):
    """The family's options, trainer and the number of parameters per kind of network."""
    fam = family(name)
    recipe = fam.recipe()
    opts = opt.build(fam.options, ("benchmark", {**values, "data": "unused", "out": "unused"}))
    opts, _ = recipe.prepare(opts)
    run_opts = recipe.resolve_speed(opts, device)
    torch.manual_seed(0)
    nets = {key: net.to(device).train() for key, net in recipe.build_nets(opts).items()}
    recipe.accelerate(nets, run_opts, device)
    params = {key: sum(p.numel() for p in net.parameters()) for key, net in nets.items()}
    return opts, recipe.make_trainer(nets, run_opts, nets), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ugatit,ugatit_tf")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--ch", type=int, default=64)
    parser.add_argument("--n-res", type=int, default=4)
    parser.add_argument("--light", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--faithful", action="store_true")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    values = {"img_size": args.img_size, "ch": args.ch, "n_res": args.n_res, "light": args.light,
              "faithful": args.faithful, "device": args.device}
    models = args.models.split(",")
    built = {name: build(name, values, device) for name in models}
    generator = torch.Generator().manual_seed(1)
    batch = [torch.rand(1, 3, args.img_size, args.img_size, generator=generator).mul(2).sub(1).to(device)
             for _ in range(2)]
    times = {name: [] for name in models}
    for i in range(args.warmup + args.iters):
        for name in models:
            trainer = built[name][1]
            trainer.begin_step(i + 1)
            start = time.perf_counter()
            trainer.step(*batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    rows = []
    for name in models:
        params = built[name][2]
        rows.append({"model": name, "params_total": sum(params.values()), "params": params,
                     "s_per_iter_median": statistics.median(times[name]), "s_per_iter_all": times[name]})
        print(f"{name:12s} {sum(params.values()) / 1e6:9.2f} M parameters  "
              f"{statistics.median(times[name]):8.2f} s / iteration  ({', '.join(f'{k} {v / 1e6:.2f} M' for k, v in params.items())})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "torch": torch.__version__,
                                         "results": rows}, indent=1))


if __name__ == "__main__":
    main()
