"""StarGAN v2 (Choi et al., CVPR 2020): one generator for many domains, styles from latent codes or references."""

from __future__ import annotations

from ..contract import ModelFamily
from .evaluate import evaluate
from .options import StarGANv2Options
from .recipe import StarGANv2Recipe
from .translate import arch_from_meta, open_onnx_translator, open_translator

FAMILY = ModelFamily(
    name="stargan_v2",
    summary="StarGAN v2: many domains, diverse styles from latent codes or reference pictures",
    options=StarGANv2Options,
    recipe=StarGANv2Recipe,
    arch=arch_from_meta,
    translator=open_translator,
    onnx_translator=open_onnx_translator,
    evaluate=evaluate,
    load_options=("fan_weights",),
    call_options=("domain", "seed", "num", "reference"),
)
