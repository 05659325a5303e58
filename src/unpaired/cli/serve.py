"""``unpaired serve``: a local web page to translate uploaded pictures with any trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inference.pictures import FITS
from ._args import add_device, port_number, positive_float

HELP = "a local web page: drop a picture, see what a model makes of it (needs unpaired[web])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", "--run", dest="checkpoint", type=Path, required=True,
                        help="run folder, checkpoint folder, weights (.safetensors, official .pt, .onnx), "
                             "or a folder of those: its models are offered in a menu and loaded on first use")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=port_number, default=7860, help="port (default 7860)")
    add_device(parser)
    parser.add_argument("--fit", choices=FITS, default="stretch",
                        help="how non-square pictures enter the model (see `unpaired translate --help`)")
    parser.add_argument("--max-upload-mb", type=positive_float, default=10.0,
                        help="largest upload accepted, in MB (default 10)")
    parser.add_argument("--max-megapixels", type=positive_float, default=40.0,
                        help="largest picture accepted, in megapixels, checked before decoding (default 40)")
    parser.add_argument("--memory-budget-mb", type=positive_float, default=1000.0,
                        help="memory the pictures being decoded and translated may take together, in MB, "
                             "estimated from their headers (default 1000); an upload that would exceed it "
                             "waits for the ones ahead of it, one that needs more alone is refused")
    parser.add_argument("--body-timeout-s", type=positive_float, default=60.0,
                        help="seconds an upload may take to arrive in full before it is refused (default 60)")


def run(args: argparse.Namespace) -> int:
    from ..serve.app import serve
    from ..serve.uploads import MB, UploadLimits

    limits = UploadLimits(max_bytes=int(args.max_upload_mb * MB), max_pixels=int(args.max_megapixels * 1e6),
                          body_timeout_s=args.body_timeout_s, memory_budget=int(args.memory_budget_mb * MB))
    serve(args.checkpoint, args.host, args.port, args.device, limits, args.fit)
    return 0
