"""photo2cartoon's options: U-GAT-IT's, with the authors' defaults and the face-ID loss."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UserError
from ...metrics import METRICS
from ...options import option
from ..ugatit.options import UGATITArch, UGATITOptions

HOURGLASS_DEPTH = 4  # 2x poolings inside each hourglass
IMG_MULTIPLE = 2 ** HOURGLASS_DEPTH
MIN_IMG_SIZE = 2 * IMG_MULTIPLE  # the innermost hourglass map needs 2 px for its reflection pads


@dataclass(frozen=True)
class Photo2CartoonOptions(UGATITOptions):
    """The authors' training defaults; options not listed (identity 10, CAM 1000, lr and weight
    decay 1e-4, img_size 256, n_res 4, the 7/5-layer discriminators) equal U-GAT-IT's."""

    model: str = option("photo2cartoon", "which model to train")
    arch: UGATITArch = option(factory=lambda: UGATITArch(light=True, ch=32))
    cycle_weight: float = option(50.0, "cycle-consistency loss weight", minimum=0)
    save_freq: int = option(1000, "write a checkpoint every N iterations", minimum=1, resumable=True)
    eval_metric: str = option("fid", "metric that picks the best checkpoint (the authors keep the best FID): kid, "
                                     "mean_kid, fid (need Inception), l1, psnr, ssim, lpips (need DATA/pairs.csv)",
                              choices=tuple(METRICS),
                              resumable=True)
    face_id_weight: float = option(1.0, "face-identity loss weight (needs --face-id-weights)", minimum=0)
    face_id_weights: str | None = option(None, "MobileFaceNet weights (the authors' model_mobilefacenet.pth); "
                                               "without it the face-ID loss is off", resumable=True, reads=True)
    rho_clipper: float = option(1.0, "upper bound for every rho", above=0, maximum=1)
    w_clipper: float = option(1.0, "upper bound for the Soft-AdaLIN blend weights", above=0, maximum=1)


def validate_photo2cartoon(opts: Photo2CartoonOptions) -> None:
    """What the hourglasses and their units need, beyond U-GAT-IT's checks."""
    arch = opts.arch
    if arch.img_size % IMG_MULTIPLE or arch.img_size < MIN_IMG_SIZE:
        raise UserError(f"--img-size must be a multiple of {IMG_MULTIPLE} and at least {MIN_IMG_SIZE} for "
                        f"photo2cartoon (its hourglasses pool four times), got {arch.img_size}")
    if arch.ch % 4:
        raise UserError(f"--ch must be a multiple of 4 for photo2cartoon (its hourglass units split the width "
                        f"in 1/2 + 1/4 + 1/4), got {arch.ch}")
