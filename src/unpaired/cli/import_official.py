"""``unpaired import-official``: convert an official U-GAT-IT checkpoint to our weights format."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..checkpoint import infer_official_arch, read_official, save_weights
from ..errors import UserError
from ..models.ugatit import build_ugatit

HELP = "convert an official UGATIT-pytorch checkpoint (*_params_*.pt) to a .safetensors weights file"
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the official .pt file (dict of six state_dicts)")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="training size of a light model (its weights do not record it; default 256); "
                             "full models are checked against it")


def run(args: argparse.Namespace) -> int:
    states = read_official(args.checkpoint)
    arch = infer_official_arch(states, args.img_size)
    nets = build_ugatit(arch)
    for name, net in nets.items():
        try:
            net.load_state_dict(states[name], strict=True)
        except RuntimeError as exc:
            raise UserError(f"{args.checkpoint}: {name} does not fit the inferred architecture "
                            f"({str(exc).splitlines()[0]})") from None
    save_weights(args.out, nets, "ugatit", arch, source=args.checkpoint.name)
    kind = "light" if arch.light else "full"
    log.info(f"wrote {args.out}: {kind}, ch {arch.ch}, n_res {arch.n_res}, img_size {arch.img_size}, n_dis {arch.n_dis}")
    return 0
