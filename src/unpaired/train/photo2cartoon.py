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
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import UGATITConfig, validate
from ..errors import UserError
from ..models.mobilefacenet import INPUT_SIZE, load_mobilefacenet
from ..models.photo2cartoon import IMG_MULTIPLE, MIN_IMG_SIZE, clip_blend_weights
from ..nn import clip_rho
from .ugatit import UGATITTrainer

log = logging.getLogger("unpaired")


@dataclass
class Photo2CartoonConfig(UGATITConfig):
    """The authors' training defaults; options not listed (identity 10, CAM 1000, lr and weight
    decay 1e-4, img_size 256, n_res 4, the 7/5-layer discriminators) equal U-GAT-IT's."""

    model: str = "photo2cartoon"
    eval_metric: str = "fid"  # the authors keep the checkpoint with the best FID
    light: bool = True
    ch: int = 32
    cycle_weight: float = 50.0
    save_freq: int = 1000
    face_id_weight: float = 1.0
    face_id_weights: str | None = None  # path to model_mobilefacenet.pth; None switches the loss off
    rho_clipper: float = 1.0  # upper clip of the LIN/AdaLIN ρ
    w_clipper: float = 1.0  # upper clip of the Soft-AdaLIN blend weights


def validate_photo2cartoon(cfg: Photo2CartoonConfig) -> None:
    """U-GAT-IT's checks plus what the hourglasses, the hourglass units and the clippers need."""
    validate(cfg)
    if cfg.img_size % IMG_MULTIPLE or cfg.img_size < MIN_IMG_SIZE:
        raise UserError(f"--img-size must be a multiple of {IMG_MULTIPLE} and at least {MIN_IMG_SIZE} for "
                        f"photo2cartoon (its hourglasses pool four times), got {cfg.img_size}")
    if cfg.ch % 4:
        raise UserError(f"--ch must be a multiple of 4 for photo2cartoon (its hourglass units split the width "
                        f"in 1/2 + 1/4 + 1/4), got {cfg.ch}")
    if cfg.face_id_weight < 0:
        raise UserError(f"--face-id-weight must be >= 0 (got {cfg.face_id_weight})")
    for name in ("rho_clipper", "w_clipper"):
        if not 0 < getattr(cfg, name) <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be in (0, 1] (got {getattr(cfg, name)})")


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
    ``cfg.face_id_weights``, and if that is unset too the loss is off (logged). A loss that is
    off contributes nothing and logs no ``G_id_loss_*`` terms.
    """

    def __init__(self, nets: dict[str, nn.Module], cfg: Photo2CartoonConfig,
                 raw: dict[str, nn.Module] | None = None, embedder: nn.Module | None = None):
        super().__init__(nets, cfg, raw)
        self.face_id = self._make_face_id_loss(embedder)

    def _make_face_id_loss(self, embedder: nn.Module | None) -> FaceIDLoss | None:
        cfg = self.cfg
        if cfg.face_id_weight == 0:
            log.info("face-ID loss off: --face-id-weight is 0")
            return None
        if embedder is None:
            if not cfg.face_id_weights:
                log.info("face-ID loss off: no --face-id-weights given (photo2cartoon's model_mobilefacenet.pth); "
                         "training without identity preservation")
                return None
            embedder = load_mobilefacenet(cfg.face_id_weights)
            log.info(f"face-ID loss on: MobileFaceNet from {cfg.face_id_weights}, weight {cfg.face_id_weight}")
        device = next(self.raw["genA2B"].parameters()).device
        return FaceIDLoss(embedder).to(device)

    def _generator_losses(self, real: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = super()._generator_losses(real, t)
        if self.face_id is None:
            return losses
        for x, y in (("A", "B"), ("B", "A")):
            losses[f"G_id_loss_{x}"] = self.face_id(real[x], t[f"fake_{x}2{y}"])
            losses[f"G_loss_{x}"] = losses[f"G_loss_{x}"] + self.cfg.face_id_weight * losses[f"G_id_loss_{x}"]
        losses["Generator_loss"] = losses["G_loss_A"] + losses["G_loss_B"]
        return losses

    def generator_step(self, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """U-GAT-IT's G update, then the authors' clippers: ρ to [0, rho_clipper], blend weights
        to [0, w_clipper] (U-GAT-IT's own ρ clip to [0, 1] has already run)."""
        losses = super().generator_step(t)
        for name in ("genA2B", "genB2A"):
            clip_rho(self.raw[name], 0.0, self.cfg.rho_clipper)
            clip_blend_weights(self.raw[name], 0.0, self.cfg.w_clipper)
        return losses
