"""Peak memory and time of training iterations per memory mode, one fresh process per configuration.

Each configuration (model, variant, image size, batch size, ``--memory``) trains a few
iterations on random batches in its own process, through the family's own recipe (the
networks, speed options and trainer ``unpaired train`` would use), and reports:

* peak memory: on a GPU ``torch.cuda.max_memory_allocated``; on the CPU the process's peak
  resident set (VmHWM), which also counts the ~0.4 GiB of Python and torch libraries
  (``baseline``, the resident set before the networks are built);
* ``static``: parameters, gradients and Adam moments (what no memory mode can save);
* the median time per iteration after the warm-up (the first iterations of a fresh process
  are slower: allocator and kernel caches fill up).

A configuration whose resident set passes ``--rss-limit-gib`` is stopped (its row says so), and
``fits`` is the smallest common GPU size it should fit in (``fresh_process.fits``: estimated
from a CPU peak, in fp32; bf16 autocast, the GPU default, needs less).

    python benchmarks/train_memory.py --img-sizes 256 --variants light --batch-sizes 1 --iters 3 --warmup 2
    python benchmarks/train_memory.py --model stargan_v2 --img-sizes 256 --batch-sizes 4 --memory normal,lean
    python benchmarks/train_memory.py --json gpu.json     # a GPU: the whole table, 256 and 512 px, batch 1 and 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import fresh_process
from fresh_process import GIB, fits, peak_gib, rss_gib

TWO_DOMAIN_VARIANTS = {"light": {"light": True}, "full": {"light": False}}


# ----------------------------------------------------------------------------- one configuration (child)


def _batch(model: str, opts, generator):
    """Random arguments of one ``trainer.step`` call for ``model``."""
    import torch

    size, n = opts.arch.img_size, opts.batch_size

    def images():
        return torch.rand(n, 3, size, size, generator=generator) * 2 - 1

    if model != "stargan_v2":
        return images(), images()
    from unpaired.models.stargan_v2.data import StarGANv2Batch

    def labels():
        return torch.randint(0, opts.arch.num_domains, (n,), generator=generator)

    def latents():
        return torch.randn(n, opts.arch.latent_dim, generator=generator)

    return (StarGANv2Batch(images(), labels(), images(), images(), labels(), latents(), latents()),)


def _static_gib(params: dict[str, int], trainer) -> float:
    """fp32 parameters of every network, plus gradient and two Adam moments of each trained one."""
    trained = sum(p.numel() for optim in _optimizers(trainer) for group in optim.param_groups for p in group["params"])
    return 4 * (sum(params.values()) + 3 * trained) / GIB


def measure(config: dict) -> dict:
    """Train ``config``'s warm-up and timed iterations in this process; its row of the table."""
    import torch

    from family_step import build
    from unpaired.runtime import resolve_device

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    baseline = rss_gib()
    opts, trainer, params = build(config["model"], config["options"], device)
    generator = torch.Generator().manual_seed(1)
    times = []
    for i in range(config["warmup"] + config["iters"]):
        batch = tuple(t.to(device) for t in _batch(config["model"], opts, generator))
        trainer.begin_step(i + 1)
        _sync(device)
        start = time.perf_counter()
        trainer.step(*batch)
        _sync(device)
        times.append(time.perf_counter() - start)
        print(f"    iteration {i + 1}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
    run_opts = trainer.opts
    return {**config, "peak_gib": peak_gib(device), "baseline_gib": 0.0 if device.type == "cuda" else baseline,
            "static_gib": _static_gib(params, trainer), "s_per_iter": statistics.median(times[config["warmup"]:]),
            "s_all": times, "memory": run_opts.memory, "sn_outputs": run_opts.sn_outputs,
            "fused_adam": run_opts.fused_adam, "precision": run_opts.precision}


def _optimizers(trainer):
    if hasattr(trainer, "optims"):
        return list(trainer.optims.values())
    return [trainer.G_optim, trainer.D_optim]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- the table (parent)


def configs(args) -> list[dict]:
    variants = TWO_DOMAIN_VARIANTS if args.model != "stargan_v2" else {"default": {}}
    chosen = [v for v in args.variants.split(",") if v in variants] or list(variants)
    extra = {key: _value(value) for key, value in (item.split("=", 1) for item in args.set)}
    out = []
    for variant, size, batch, memory in itertools.product(chosen, _ints(args.img_sizes), _ints(args.batch_sizes),
                                                          args.memory.split(",")):
        options = {**variants[variant], **extra, "img_size": size, "batch_size": batch, "memory": memory}
        if args.model == "stargan_v2":
            options.setdefault("domains", ["a", "b"])
        out.append({"model": args.model, "variant": variant, "img_size": size, "batch": batch, "mode": memory,
                    "options": options, "iters": args.iters, "warmup": args.warmup, "device": args.device,
                    "threads": args.threads})
    return out


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _value(text: str):
    import yaml

    return yaml.safe_load(text)


def print_rows(rows: list[dict]) -> None:
    print(f"{'model':12s} {'variant':7s} {'px':>5s} {'batch':>5s} {'memory':7s} {'peak GiB':>9s} {'static':>7s} "
          f"{'s/iter':>7s} {'fits':>8s}  status")
    for r in rows:
        ok = r.get("status") == "ok"
        print(f"{r['model']:12s} {r['variant']:7s} {r['img_size']:5d} {r['batch']:5d} {r['mode']:7s} "
              f"{r['peak_gib']:9.2f} {r.get('static_gib', float('nan')):7.2f} "
              f"{r['s_per_iter'] if ok else float('nan'):7.1f} {fits(r):>8s}  {r['status']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ugatit", help="a model family (ugatit, photo2cartoon, stargan_v2)")
    parser.add_argument("--variants", default="light,full", help="comma-separated: light, full (two-domain models)")
    parser.add_argument("--img-sizes", default="256,512", help="comma-separated")
    parser.add_argument("--batch-sizes", default="1,4", help="comma-separated")
    parser.add_argument("--memory", default="normal,lean", help="comma-separated memory modes")
    parser.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                        help="any other training option, e.g. --set ch=32 --set faithful=true (repeatable)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--rss-limit-gib", type=float, default=20.0,
                        help="stop a configuration whose resident set passes this (CPU runs)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fresh_process.child_main(measure, args.child)
        return
    from train_step import hardware
    from unpaired.runtime import resolve_device

    info = hardware(resolve_device(args.device))
    print(json.dumps(info))
    rows = []
    for config in configs(args):
        print(f"{config['model']} {config['variant']} {config['img_size']} px, batch {config['batch']}, "
              f"memory {config['mode']}:", flush=True)
        rows.append(fresh_process.run(__file__, config, args.rss_limit_gib))
        print_rows(rows[-1:])
        if args.json:
            args.json.write_text(json.dumps({"hardware": info, "load_average_end": os.getloadavg(), "rows": rows},
                                            indent=1))
    print("\nall configurations:")
    print_rows(rows)


if __name__ == "__main__":
    main()
