"""U-GAT-IT's options: the official defaults, the architecture nested once, and their checks.

Pure data (no torch), so ``unpaired train --help`` lists them without loading a network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...errors import UserError
from ...metrics import METRICS
from ...options import MAX_IMG_SIZE, RunOptions, option

DEFAULT_N_DIS = 6  # official global/local discriminator depths 7/5


def discriminator_fits(n_layers: int, img_size: int) -> bool:
    """Whether a discriminator of ``n_layers`` runs on ``img_size`` (floor halvings included)."""
    size = img_size
    for _ in range(n_layers - 2):
        size //= 2
    return n_layers >= 3 and size >= 3


@dataclass(frozen=True)
class UGATITArch:
    """Everything that fixes the shapes of the six networks (what a checkpoint must agree on)."""

    light: bool = option(False, "light model: the gamma/beta MLP reads pooled features (official --light)")
    img_size: int = option(256, "training crop / test size in pixels, a multiple of 4", minimum=4,
                           maximum=MAX_IMG_SIZE,
                           aliases=("--size",))
    img_ch: int = option(3, "image channels; only 3 (RGB) is supported, as the official code decodes RGB",
                         choices=(3,))
    ch: int = option(64, "base channel width (official --ch)", minimum=1)
    n_res: int = option(4, "residual blocks in encoder and decoder each", minimum=1)
    n_dis: int | None = option(None, "discriminator depth: global n_dis+1, local n_dis-1 layers "
                                     "(default 6, reduced below 96 px)", minimum=4)
    fix_d_cam_weight: bool = option(False, "fix an official quirk: scale D's CAM features by the "
                                           "spectrally normalised weight")

    @property
    def global_layers(self) -> int:
        return (self.n_dis or DEFAULT_N_DIS) + 1

    @property
    def local_layers(self) -> int:
        return (self.n_dis or DEFAULT_N_DIS) - 1


@dataclass(frozen=True)
class UGATITOptions(RunOptions):
    """Every option of the official implementation (README maps the names), plus our own."""

    model: str = option("ugatit", "which model to train")
    arch: UGATITArch = option(factory=UGATITArch)
    decay_flag: bool = option(True, "linear learning-rate decay over the second half (official --decay_flag)")
    lr: float = option(1e-4, "Adam learning rate for G and D", minimum=0)
    weight_decay: float = option(1e-4, "Adam (coupled L2) weight decay", minimum=0)
    adv_weight: float = option(1.0, "adversarial loss weight", minimum=0)
    cycle_weight: float = option(10.0, "cycle-consistency loss weight", minimum=0)
    identity_weight: float = option(10.0, "identity loss weight", minimum=0)
    cam_weight: float = option(1000.0, "generator CAM loss weight", minimum=0)
    n_samples: int = option(5, "train and test images per sample grid", minimum=1, resumable=True)
    # periodic evaluation (rank 0): metrics logged as eval/*, best checkpoint kept in checkpoints/best
    eval_freq: int | None = option(None, "score the generators on the test set every N iterations and keep "
                                         "checkpoints/best", minimum=1, resumable=True)
    eval_metric: str = option("kid", "metric that picks the best checkpoint: kid, mean_kid, fid (need Inception), "
                                     "l1, psnr, ssim, lpips (need DATA/pairs.csv)", choices=tuple(METRICS),
                              resumable=True)
    inception_weights: str | None = option(None, "local Inception weights file for KID/FID (offline use; see "
                                                 "unpaired eval)", resumable=True, reads=True)


def resolve_n_dis(opts: UGATITOptions) -> tuple[UGATITOptions, str | None]:
    """``opts`` with the discriminator depth fixed for its image size, and a note when it adapted.

    The official code hard-codes global/local depths 7/5 (n_dis 6), which need img_size >= 96.
    Below that, the default shrinks to the deepest pair that runs; an explicit value that cannot
    run is refused rather than silently changed.
    """
    arch = opts.arch

    def fits(n_dis: int) -> bool:
        return (n_dis >= 4 and discriminator_fits(n_dis + 1, arch.img_size)
                and discriminator_fits(n_dis - 1, arch.img_size))

    if arch.n_dis is not None:
        if not fits(arch.n_dis):
            raise UserError(f"--n-dis {arch.n_dis} (global depth {arch.n_dis + 1}, local {arch.n_dis - 1}) cannot "
                            f"run at --img-size {arch.img_size}; use a smaller --n-dis or a larger image size")
        return opts, None
    n_dis = DEFAULT_N_DIS
    while n_dis > 4 and not fits(n_dis):
        n_dis -= 1
    if not fits(n_dis):
        raise UserError(f"--img-size {arch.img_size} is too small for the discriminators (minimum 24)")
    note = None
    if n_dis != DEFAULT_N_DIS:
        note = (f"img_size {arch.img_size} is below 96: discriminator depths reduced to global {n_dis + 1}, "
                f"local {n_dis - 1} (n_dis {n_dis}; the official 7/5 need img_size >= 96)")
    return dataclasses.replace(opts, arch=dataclasses.replace(arch, n_dis=n_dis)), note


def validate(opts: UGATITOptions) -> None:
    """Refuse combinations the networks or the loop cannot use (single values are checked on entry)."""
    if opts.arch.img_size % 4:
        raise UserError(f"--img-size must be a multiple of 4 (got {opts.arch.img_size})")
    if opts.data is None:
        raise UserError("--data DIR is required: a folder with trainA, trainB, testA, testB "
                        "(or run `unpaired demo` to train on the built-in emoji data)")
