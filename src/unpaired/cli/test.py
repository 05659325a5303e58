"""``unpaired test``: translate a run's testA→B and testB→A with its newest checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import add_device, positive_int

HELP = "translate the test sets of a run (testA→B, testB→A): translation, heatmap and side-by-side per image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "--run", dest="run", type=Path, required=True,
                        help="run directory made by `unpaired train`")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the one the run was trained on)")
    parser.add_argument("--out", "--output", dest="out", type=Path, help="where to write (default: RUN/test)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass")
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    from ..inference.test_phase import translate_test_sets

    translate_test_sets(args.run, args.data, args.out, args.batch_size, args.device)
    return 0
