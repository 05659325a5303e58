"""U-GAT-IT (Kim et al., ICLR 2020) as the official PyTorch code builds and trains it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...checkpoint import read_arch
from ...options import build_arch
from ...evaluation import two_domain
from ..contract import ModelFamily
from .networks import build_generator
from .official import load_official
from .options import UGATITArch, UGATITOptions
from .recipe import UGATITRecipe
from .translate import open_onnx_translator, open_translator

OFFICIAL_SUFFIXES = (".pt", ".pth")


def arch_from_meta(values: dict[str, Any]) -> UGATITArch:
    """The architecture a weights file records, checked (keys of older releases that no longer exist are ignored)."""
    return build_arch(UGATITArch, values)


def translator(arch: UGATITArch, read, source: Path, **options: Any):
    return open_translator("ugatit", build_generator, arch, read, source, **options)


def onnx_translator(path: Path, meta: dict[str, str], **options: Any):
    return open_onnx_translator("ugatit", arch_from_meta(read_arch(meta, path)), path, meta, **options)


FAMILY = ModelFamily(
    name="ugatit",
    summary="U-GAT-IT, the official PyTorch code's model (CAM attention + AdaLIN), two domains",
    options=UGATITOptions,
    recipe=UGATITRecipe,
    arch=arch_from_meta,
    translator=translator,
    onnx_translator=onnx_translator,
    evaluate=two_domain.evaluate,
    load_options=("direction",),
    read_official=load_official,
    official_paths=lambda path: path.suffix in OFFICIAL_SUFFIXES and path.is_file(),
    official_summary="an official U-GAT-IT .pt",
)
