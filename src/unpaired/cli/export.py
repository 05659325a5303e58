"""``unpaired export``: write one generator as an ONNX file, verified with onnxruntime."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UserError
from ..export import DEFAULT_OPSET, TOLERANCE, export_onnx
from ..translate import DIRECTIONS, load_generator
from .translate import positive_int

HELP = "export a generator to ONNX (checked against PyTorch with onnxruntime)"
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="run folder (newest checkpoint), weights .safetensors or official .pt")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE", help="file to write (.onnx)")
    parser.add_argument("--direction", choices=list(DIRECTIONS), default="A2B", help="which generator to export")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="accept any batch size (default: batch 1, which some runtimes optimise better)")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                        help=f"ONNX opset version (default {DEFAULT_OPSET})")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="input size S for a light model (default: its training size); full models keep theirs")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint.suffix == ".onnx":
        raise UserError(f"{args.checkpoint} is already an ONNX file: export from a run, .safetensors or .pt")
    loaded = load_generator(args.checkpoint, args.direction, args.size)
    check = export_onnx(loaded, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch)
    batch = "any batch size" if args.dynamic_batch else "batch 1"
    log.info(f"wrote {args.output}: {loaded.model} {args.direction}, {loaded.img_size}x{loaded.img_size} input, "
             f"{batch}, opset {args.opset}")
    log.info(f"onnxruntime vs PyTorch, max abs difference: image {check.image_diff:.2e}, "
             f"heatmap {check.heatmap_diff:.2e} (relative); limit {TOLERANCE:g}")
    return 0
