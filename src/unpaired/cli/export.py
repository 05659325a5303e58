"""``unpaired export``: write a model as ONNX (multi-domain models: their two graphs), checked by onnxruntime."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._args import image_size, positive_int

HELP = "export a model to ONNX (checked against PyTorch with onnxruntime)"
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inference.onnx import DEFAULT_OPSET

    parser.add_argument("--checkpoint", "--run", dest="checkpoint", type=Path, required=True,
                        help="run folder (newest checkpoint), weights .safetensors or official file")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format")
    parser.add_argument("--out", "--output", dest="out", type=Path, required=True, metavar="FILE",
                        help="file to write (.onnx); StarGAN v2: the latent-guided graph, with the "
                             "reference-guided one beside it as FILE_reference.onnx")
    parser.add_argument("--direction", choices=("A2B", "B2A"), default=None,
                        help="two-domain models: which generator to export (default A2B)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="accept any batch size (default: batch 1, which some runtimes optimise better)")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                        help=f"ONNX opset version (default {DEFAULT_OPSET})")
    parser.add_argument("--img-size", "--size", dest="img_size", type=image_size, default=None,
                        help="input size S for a light model (default: its training size); full models keep theirs")


def run(args: argparse.Namespace) -> int:
    from ..inference.loading import load_translator
    from ..inference.onnx import TOLERANCE

    translator = load_translator(args.checkpoint, device="cpu", half=False, img_size=args.img_size,
                                 direction=args.direction)
    diffs = translator.export(args.out, opset=args.opset, dynamic_batch=args.dynamic_batch)
    batch = "any batch size" if args.dynamic_batch else "batch 1"
    for path, found in diffs.items():
        worst = ", ".join(f"{name} {value:.2e}" for name, value in found.items())
        log.info(f"wrote {path}: {translator!r}, {batch}, opset {args.opset}; onnxruntime vs PyTorch, "
                 f"max abs difference: {worst} (limit {TOLERANCE:g})")
    return 0
