"""``unpaired demo``: train a small light U-GAT-IT on the built-in emoji data, then translate its test set.

The built-in data are 64-px emoji in two styles (OpenMoji → Microsoft Fluent, see the licence
notice beside them). The defaults finish in a few minutes on a 2-core CPU; the result is a model
that has started to learn the colours and shapes of the target style, not a finished one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "train a small model on the built-in emoji data (a few minutes on a CPU) and translate its test set"
log = logging.getLogger("unpaired")

DEMO_OPTIONS = dict(light=True, img_size=64, ch=16, n_res=2, batch_size=1, print_freq=100, save_freq=100,
                    log_freq=10, n_samples=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("unpaired-demo"), help="run directory (default: ./unpaired-demo)")
    parser.add_argument("--iters", type=int, default=400, help="training iterations (default: 400)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    from .. import checkpoint as ckpt
    from ..config import UGATITConfig
    from ..data import demo_dataset_path
    from ..train.loop import Training
    from .test import translate_test_sets

    resume = (args.out / "config.yaml").is_file()
    if resume:
        log.info(f"{args.out} already holds the demo run: continuing it")
        cfg = UGATITConfig(out=str(args.out))
        Training(cfg, resume=True, requested={"out": str(args.out), "iters": args.iters, "device": args.device}).run()
    else:
        cfg = UGATITConfig(data=str(demo_dataset_path()), out=str(args.out), iters=args.iters, device=args.device,
                           seed=args.seed, **DEMO_OPTIONS)
        Training(cfg).run()
    test_dir = translate_test_sets(args.out)
    latest = ckpt.latest_checkpoint(args.out)
    step = int(latest.name) if latest else 0
    print(f"\nDemo finished. Look at:\n"
          f"  sample grids     {args.out / 'samples' / f'A2B_{step:07d}.png'} (and B2A_*)\n"
          f"  test translations {test_dir / 'A2B' / 'side_by_side'} (input | attention | output)\n"
          f"  training curves  tensorboard --logdir {args.out / 'logs'}")
    return 0
