"""photo2cartoon (minivision-ai): U-GAT-IT with hourglasses, Soft-AdaLIN and a face-ID loss, for face cartoons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...checkpoint import read_arch
from ...evaluation import two_domain
from ..contract import ModelFamily
from ..ugatit.family import OFFICIAL_SUFFIXES, arch_from_meta
from ..ugatit.translate import open_onnx_translator, open_translator
from .networks import build_generator
from .official import load_official
from .options import Photo2CartoonOptions
from .recipe import Photo2CartoonRecipe


def translator(arch, read, source: Path, **options: Any):
    return open_translator("photo2cartoon", build_generator, arch, read, source, face_crops=True, **options)


def onnx_translator(path: Path, meta: dict[str, str], **options: Any):
    return open_onnx_translator("photo2cartoon", arch_from_meta(read_arch(meta, path)), path, meta, face_crops=True,
                                **options)


FAMILY = ModelFamily(
    name="photo2cartoon",
    summary="photo2cartoon: U-GAT-IT with hourglass blocks, Soft-AdaLIN and a face-ID loss, for face cartoons",
    options=Photo2CartoonOptions,
    recipe=Photo2CartoonRecipe,
    arch=arch_from_meta,
    translator=translator,
    onnx_translator=onnx_translator,
    evaluate=two_domain.evaluate,
    load_options=("direction",),
    read_official=load_official,
    official_paths=lambda path: path.suffix in OFFICIAL_SUFFIXES and path.is_file(),
    official_summary="the photo2cartoon authors' .pt",
)
