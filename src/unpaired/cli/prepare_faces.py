"""``unpaired prepare-faces``: turn raw photos into a photo2cartoon training folder of face crops."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UserError
from ..faces import BACKGROUNDS, SKIPPED_CSV, prepare_folder
from ._args import image_size

HELP = "detect, align, crop and cut out faces from photos into a training folder (needs unpaired[faces])"
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True,
                        help="a photo or a folder of photos (searched recursively)")
    parser.add_argument("--out", "--output", dest="out", type=Path, required=True,
                        help="folder for the face crops (.png) and skipped.csv")
    parser.add_argument("--img-size", "--size", dest="size", type=image_size, default=256,
                        help="side of the square crops in pixels (default 256)")
    parser.add_argument("--background", choices=BACKGROUNDS, default="white",
                        help="white: cut the person out onto white, as photo2cartoon trains; "
                             "keep: leave the photo's background")
    parser.add_argument("--all", action="store_true", dest="every",
                        help="keep every face of a photo (named NAME_1.png, NAME_2.png, ... from the left) "
                             "instead of skipping photos with several similar-sized faces")


def run(args: argparse.Namespace) -> int:
    report = prepare_folder(args.input, args.out, size=args.size, background=args.background, every=args.every)
    skipped = f"{len(report.skipped)} skipped (listed in {args.out / SKIPPED_CSV})"
    if not report.written:
        raise UserError(f"no usable face in {args.input}; {skipped}")
    log.info(f"wrote {len(report.written)} face crops to {args.out}; {skipped}")
    return 0
