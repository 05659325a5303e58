"""``unpaired plot``: a run's loss, learning-rate and ρ curves as PNG figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..plots import plot_run

HELP = "draw a run's training curves (losses, lr, rho, speed, eval) from its TensorBoard logs as PNGs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run folder (reads RUN/logs)")
    parser.add_argument("--out", "--output", dest="out", type=Path, default=None,
                        help="folder for the PNGs (default RUN/plots)")
    parser.add_argument("--smooth", type=float, default=0.6,
                        help="TensorBoard-style smoothing weight in [0, 1); 0 draws the raw curves only (default 0.6)")


def run(args: argparse.Namespace) -> int:
    for path in plot_run(args.run, args.out, args.smooth):
        print(path)
    return 0
