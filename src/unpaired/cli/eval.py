"""``unpaired eval``: score a run's newest checkpoint by its model family's protocol."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..metrics import METRICS
from ._args import add_device, checked, positive_int, seed

HELP = ("score a run on the test sets: KID, mean KID, FID and, with DIR/pairs.csv, L1, PSNR, SSIM, LPIPS "
        "(StarGAN v2 runs: the official FID and LPIPS-diversity protocol on val/ and train/)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..evaluation.common import KIDSettings, parse_metrics

    parser.add_argument("--checkpoint", "--run", dest="run", type=Path, required=True,
                        help="run folder (its newest checkpoint is scored)")
    parser.add_argument("--data", type=Path, default=None,
                        help="data folder with testA, testB and optionally pairs.csv, or StarGAN v2's "
                             "train/<domain>, val/<domain> (default: the run's own)")
    parser.add_argument("--direction", choices=("both", "A2B", "B2A"), default=None,
                        help="two-domain runs: which generators to score (default both)")
    parser.add_argument("--metrics", type=parse_metrics, default=None,
                        help=f"comma-separated subset of {','.join(METRICS)} (default: all; StarGAN v2: fid,lpips)")
    parser.add_argument("--inception-weights", type=Path, default=None,
                        help="local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
                             "(for offline machines; default: downloaded on first use)")
    parser.add_argument("--lpips-weights", type=Path, default=None,
                        help="local copy of torchvision's alexnet-owt-7be5be79.pth for the LPIPS backbone "
                             "(for offline machines; default: downloaded on first use)")
    parser.add_argument("--kid-subset-size", type=checked(int, minimum=2), default=KIDSettings.subset_size,
                        help="images per KID subset, capped at the set sizes (default 1000)")
    parser.add_argument("--kid-subsets", type=positive_int, default=KIDSettings.n_subsets,
                        help="KID subsets (default 100)")
    parser.add_argument("--seed", type=seed, default=KIDSettings.seed,
                        help="seed of the KID subset draws (StarGAN v2: of the latent codes)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    add_device(parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.common import EvalSettings, KIDSettings
    from ..evaluation.run import evaluate_run

    directions = {None: None, "both": ("A2B", "B2A")}.get(args.direction, (args.direction,))
    settings = EvalSettings(metrics=args.metrics, directions=directions, inception_weights=args.inception_weights,
                            lpips_weights=args.lpips_weights,
                            kid=KIDSettings(args.kid_subset_size, args.kid_subsets, args.seed),
                            batch_size=args.batch_size, device=args.device)
    _, markdown = evaluate_run(args.run, data=args.data, settings=settings)
    print(markdown, end="")
    return 0
