"""``unpaired demo``: train a small light U-GAT-IT on the built-in emoji data, then translate its test set.

The built-in data are 64-px emoji in two styles (OpenMoji → Microsoft Fluent, see the licence
notice beside them). The defaults finish in a few minutes on a 2-core CPU; the result is a model
that has started to learn the colours and shapes of the target style, not a finished one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UserError
from ._args import add_device, positive_int, seed

HELP = "train a small model on the built-in emoji data (a few minutes on a CPU) and translate its test set"
log = logging.getLogger("unpaired")

DEMO_ARCH = dict(light=True, img_size=64, ch=16, n_res=2)
DEMO_OPTIONS = dict(batch_size=1, print_freq=100, save_freq=100, log_freq=10, n_samples=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", "--output", dest="out", type=Path, default=Path("unpaired-demo"),
                        help="run directory (default: ./unpaired-demo)")
    parser.add_argument("--iters", type=positive_int, default=400, help="training iterations (default: 400)")
    add_device(parser)
    parser.add_argument("--seed", type=seed, default=0, help="random seed")


def run(args: argparse.Namespace) -> int:
    from .. import options as opt
    from ..data.two_domain import demo_dataset_path
    from ..inference.test_phase import translate_test_sets
    from ..models.registry import family
    from ..run import RunDir
    from ..training.loop import Training

    run_dir = RunDir(args.out)
    if run_dir.is_run():
        trained_on = run_dir.read_config().get("data")
        demo = demo_dataset_path().parts[-2:]  # the package's data folder, wherever it is installed
        if not isinstance(trained_on, str) or Path(trained_on).parts[-2:] != demo:
            raise UserError(f"{args.out} holds a run that is not the demo's (it trains on {trained_on}): "
                            f"choose another --out (unpaired demo continues only its own runs)")
        log.info(f"{args.out} already holds a demo run: continuing it")
        Training.resume(args.out, {"iters": args.iters, "device": args.device}).run()
    else:
        options = opt.build(family("ugatit").options, ("the demo", {
            "data": str(demo_dataset_path()), "out": str(args.out), "iters": args.iters, "device": args.device,
            "seed": args.seed, **DEMO_ARCH, **DEMO_OPTIONS}))
        Training(options).run()
    test_dir = translate_test_sets(args.out)
    latest = run_dir.latest_checkpoint()
    step = int(latest.name) if latest else 0
    print(f"\nDemo finished. Look at:\n"
          f"  sample grids     {run_dir.samples / f'A2B_{step:07d}.png'} (and B2A_*)\n"
          f"  test translations {test_dir / 'A2B' / 'side_by_side'} (input | attention | output)\n"
          f"  training curves  tensorboard --logdir {run_dir.logs}")
    return 0
