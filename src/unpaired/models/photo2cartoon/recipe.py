"""What the training loop asks of photo2cartoon: U-GAT-IT's data, discriminators, grids and loop,
with its own generator, checks and trainer (face-ID loss, blend-weight clipping)."""

from __future__ import annotations

from torch import nn

from ..ugatit.recipe import UGATITRecipe
from .networks import build_photo2cartoon
from .options import Photo2CartoonOptions, validate_photo2cartoon
from .train import Photo2CartoonTrainer


class Photo2CartoonRecipe(UGATITRecipe):
    def prepare(self, opts: Photo2CartoonOptions) -> tuple[Photo2CartoonOptions, list[str]]:
        opts, notes = super().prepare(opts)
        validate_photo2cartoon(opts)
        return opts, notes

    def build_nets(self, opts: Photo2CartoonOptions) -> dict[str, nn.Module]:
        return build_photo2cartoon(opts.arch)

    def make_trainer(self, nets: dict[str, nn.Module], opts: Photo2CartoonOptions, raw: dict[str, nn.Module]):
        return Photo2CartoonTrainer(nets, opts, raw=raw)
