"""``unpaired serve``: a local web page to translate uploaded pictures and see the attention map."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inference.pictures import FITS
from ._args import add_device, port_number, positive_float

HELP = "a local web page: drop a picture, see its translation and attention heatmap (needs unpaired[web])"


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


def run(args: argparse.Namespace) -> int:
    from ..serve.app import MB, UploadLimits, serve

    limits = UploadLimits(max_bytes=int(args.max_upload_mb * MB), max_pixels=int(args.max_megapixels * 1e6))
    serve(args.checkpoint, args.host, args.port, args.device, limits, args.fit)
    return 0
