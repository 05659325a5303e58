"""U-GAT-IT exactly as the paper's official TensorFlow code (taki0112/UGATIT), with its released checkpoints."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from ...checkpoint import read_arch
from ...evaluation import two_domain
from ..contract import ModelFamily
from ..ugatit.translate import open_onnx_translator, open_translator
from .bundle import looks_like_checkpoint
from .data import TFInferenceTransform
from .networks import TFGenerator
from .official import read_tf_checkpoint
from .options import UGATITTFArch, UGATITTFOptions
from .recipe import UGATITTFRecipe


def arch_from_meta(values: dict[str, Any]) -> UGATITTFArch:
    known = {f.name for f in fields(UGATITTFArch)}
    return UGATITTFArch(**{key: value for key, value in values.items() if key in known})


def translator(arch: UGATITTFArch, read, source: Path, **options: Any):
    return open_translator("ugatit_tf", TFGenerator, arch, read, source, transform=TFInferenceTransform,
                           **options)


def onnx_translator(path: Path, meta: dict[str, str], **options: Any):
    return open_onnx_translator("ugatit_tf", arch_from_meta(read_arch(meta, path)), path, meta,
                                transform=TFInferenceTransform, **options)


FAMILY = ModelFamily(
    name="ugatit_tf",
    summary="U-GAT-IT as the paper's TensorFlow code (its released selfie2anime checkpoints load), two domains",
    options=UGATITTFOptions,
    recipe=UGATITTFRecipe,
    arch=arch_from_meta,
    translator=translator,
    onnx_translator=onnx_translator,
    evaluate=two_domain.evaluate,
    load_options=("direction",),
    read_official=read_tf_checkpoint,
    official_paths=looks_like_checkpoint,
    official_summary="an official TF checkpoint folder or prefix (taki0112/UGATIT)",
)
