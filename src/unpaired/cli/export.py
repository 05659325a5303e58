"""``unpaired export``: write one generator (StarGAN v2: its two translation graphs) as ONNX, checked by onnxruntime."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import UserError
from ..export import DEFAULT_OPSET, TOLERANCE, export_onnx, export_stargan_v2
from ..translate import DIRECTIONS, checkpoint_model, load_generator, load_stargan_v2
from .translate import positive_int

HELP = "export a generator to ONNX (checked against PyTorch with onnxruntime)"
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="run folder (newest checkpoint), weights .safetensors or official .pt")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format")
    parser.add_argument("--output", type=Path, required=True, metavar="FILE",
                        help="file to write (.onnx); StarGAN v2: the latent-guided graph, with the "
                             "reference-guided one beside it as FILE_reference.onnx")
    parser.add_argument("--direction", choices=list(DIRECTIONS), default=None,
                        help="which generator to export (default A2B; not for StarGAN v2, which exports all domains)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="accept any batch size (default: batch 1, which some runtimes optimise better)")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                        help=f"ONNX opset version (default {DEFAULT_OPSET})")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="input size S for a light model (default: its training size); full models keep theirs")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint.suffix == ".onnx":
        raise UserError(f"{args.checkpoint} is already an ONNX file: export from a run, .safetensors or .pt")
    batch = "any batch size" if args.dynamic_batch else "batch 1"
    if checkpoint_model(args.checkpoint) == "stargan_v2":
        return _export_stargan_v2(args, batch)
    direction = args.direction or "A2B"
    loaded = load_generator(args.checkpoint, direction, args.size)
    check = export_onnx(loaded, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch)
    log.info(f"wrote {args.output}: {loaded.model} {direction}, {loaded.img_size}x{loaded.img_size} input, "
             f"{batch}, opset {args.opset}")
    log.info(f"onnxruntime vs PyTorch, max abs difference: image {check.image_diff:.2e}, "
             f"heatmap {check.heatmap_diff:.2e} (relative); limit {TOLERANCE:g}")
    return 0


def _export_stargan_v2(args: argparse.Namespace, batch: str) -> int:
    if args.direction is not None:
        raise UserError("--direction is for U-GAT-IT models: a StarGAN v2 export serves every domain "
                        "(the graphs take the target domain index y)")
    loaded = load_stargan_v2(args.checkpoint, args.size)
    diffs = export_stargan_v2(loaded, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch)
    domains = ", ".join(f"{i}={name}" for i, name in enumerate(loaded.arch.domains))
    (latent, latent_diff), (reference, reference_diff) = diffs.items()
    log.info(f"wrote {latent} (image, z[{loaded.arch.latent_dim}], y -> image) and {reference} "
             f"(image, reference, y -> image): stargan_v2, {loaded.img_size}x{loaded.img_size} input, {batch}, "
             f"opset {args.opset}; domains y: {domains}")
    log.info(f"onnxruntime vs PyTorch on every domain, max abs difference: latent-guided {latent_diff:.2e}, "
             f"reference-guided {reference_diff:.2e}; limit {TOLERANCE:g}")
    return 0
