"""``unpaired import-official``: convert a family's official checkpoint to our weights format."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._args import image_size

HELP = ("convert an official checkpoint (UGATIT-pytorch *_params_*.pt, photo2cartoon .pt, ...) to a "
        ".safetensors weights file")
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the official file or folder")
    parser.add_argument("--out", "--output", dest="out", type=Path, required=True,
                        help="weights file to write (.safetensors)")
    parser.add_argument("--img-size", "--size", dest="img_size", type=image_size, default=None,
                        help="training size of a light model (its weights do not record it; default 256); "
                             "full models are checked against it")


def imported(path: Path) -> bool:
    """Whether ``path`` is a weights file that import-official wrote (the only files it replaces)."""
    from ..checkpoint import load_weights
    from ..errors import UserError

    try:
        return "source" in load_weights(path, nets=())[1]
    except UserError:
        return False


def run(args: argparse.Namespace) -> int:
    from .. import guard
    from ..checkpoint import save_weights
    from ..errors import UserError
    from ..inference.loading import identify

    found = identify(args.checkpoint, args.img_size)
    if found.kind != "official":
        raise UserError(f"{args.checkpoint} is already in our format ({found.kind}); import-official reads the "
                        f"official files of a model's authors")
    guard.check([args.checkpoint], files=[args.out], ours=imported)
    save_weights(args.out, found.states, found.model, found.arch, source=args.checkpoint.name)
    arch = found.arch
    kind = "light" if getattr(arch, "light", False) else "full"
    log.info(f"wrote {args.out}: {found.model}, {kind}, " + ", ".join(
        f"{name} {getattr(arch, name)}" for name in ("ch", "n_res", "img_size", "n_dis") if hasattr(arch, name)))
    return 0
