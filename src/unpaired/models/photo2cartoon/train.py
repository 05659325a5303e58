"""photo2cartoon training: U-GAT-IT's iteration plus a face-identity loss and blend-weight clipping.

As the authors' ``UgatitSadalinHourglass.train()``: every U-GAT-IT loss and weight, then
``G_id_loss_A = 1 − cos(embed(real_A), embed(fake_A2B))`` and ``G_id_loss_B`` likewise for
B → A, each weighted by ``face_id_weight`` and added to ``G_loss_A`` / ``G_loss_B`` (so both
directions, after weighting, inside the per-domain sums). Embeddings come from a frozen
MobileFaceNet on a fixed 112-px crop of the aligned face. Two changes: the loss is averaged
over the batch (the authors' single-GPU code leaves it per sample, which fails for batch > 1),
and without embedder weights the loss is switched off with a logged message instead of the
run failing at start-up. Otherwise the numbers are theirs: against a statement-by-statement
transcription of their loop, four iterations (learning-rate decay included) gave bit-identical
losses and weights, at batch 1 with the face-ID loss and at batch 2 without it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from ...nn import clip_rho
from ..ugatit.train import UGATITTrainer
from .mobilefacenet import INPUT_SIZE, load_mobilefacenet
from .networks import clip_blend_weights
from .options import Photo2CartoonOptions

log = logging.getLogger("unpaired")


def face_crop(images: torch.Tensor) -> torch.Tensor:
    """The authors' fixed face box of an aligned portrait, resized to the embedder's 112×112.

    Rows from 0.224·H to H − 0.143·H, a centred square of that height, bilinear with aligned
    corners; the integer truncations are theirs.
    """
    h, w = images.shape[2:]
    top = int(h / 2.1 * (0.8 - 0.33))
    size = int(h - h / 2.1 * 0.3) - top
    left = int(w / 2 - size / 2)
    crop = images[:, :, top:top + size, left:left + size]
    return F.interpolate(crop, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=True)


class FaceIDLoss(nn.Module):
    """``1 − cos(embed(crop(real)), embed(crop(fake)))``, averaged over the batch.

    The embedder sees the [-1, 1] images as they are (the authors do not re-normalise). It is
    frozen (no parameter takes gradients) but differentiable, so the gradient reaches the
    generator through it, and it stays in eval mode whatever ``train()`` is called with: its
    BatchNorm statistics are part of the pretrained weights.
    """

    def __init__(self, embedder: nn.Module):
        super().__init__()
        self.embedder = embedder.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FaceIDLoss:
        return super().train(False)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        similarity = F.cosine_similarity(self.embedder(face_crop(real)), self.embedder(face_crop(fake)))
        return (1 - similarity).mean()


class Photo2CartoonTrainer(UGATITTrainer):
    """U-GAT-IT's trainer with the face-ID loss and the blend-weight clipping.

    ``embedder`` is the face embedding network (a MobileFaceNet); when None it is loaded from
    ``opts.face_id_weights``, and if that is unset too the loss is off (logged). A loss that is
    off contributes nothing and logs no ``G_id_loss_*`` terms.
    """

    def __init__(self, nets: dict[str, nn.Module], opts: Photo2CartoonOptions,
                 raw: dict[str, nn.Module] | None = None, embedder: nn.Module | None = None):
        super().__init__(nets, opts, raw)
        self.face_id = self._make_face_id_loss(embedder)

    def _make_face_id_loss(self, embedder: nn.Module | None) -> FaceIDLoss | None:
        opts = self.opts
        if opts.face_id_weight == 0:
            log.info("face-ID loss off: --face-id-weight is 0")
            return None
        if embedder is None:
            if not opts.face_id_weights:
                log.info("face-ID loss off: no --face-id-weights given (photo2cartoon's model_mobilefacenet.pth); "
                         "training without identity preservation")
                return None
            embedder = load_mobilefacenet(opts.face_id_weights)
            log.info(f"face-ID loss on: MobileFaceNet from {opts.face_id_weights}, weight {opts.face_id_weight}")
        device = next(self.raw["genA2B"].parameters()).device
        return FaceIDLoss(embedder).to(device)

    def _generator_losses(self, real: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super()._generator_losses(real, tensors)
        if self.face_id is None:
            return losses
        for x, y in (("A", "B"), ("B", "A")):
            losses[f"G_id_loss_{x}"] = self.face_id(real[x], tensors[f"fake_{x}2{y}"])
            losses[f"G_loss_{x}"] = losses[f"G_loss_{x}"] + self.opts.face_id_weight * losses[f"G_id_loss_{x}"]
        losses["Generator_loss"] = losses["G_loss_A"] + losses["G_loss_B"]
        return losses

    def generator_step(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """U-GAT-IT's G update, then the authors' clippers: ρ to [0, rho_clipper], blend weights
        to [0, w_clipper] (U-GAT-IT's own ρ clip to [0, 1] has already run)."""
        losses = super().generator_step(tensors)
        for name in ("genA2B", "genB2A"):
            clip_rho(self.raw[name], 0.0, self.opts.rho_clipper)
            clip_blend_weights(self.raw[name], 0.0, self.opts.w_clipper)
        return losses
