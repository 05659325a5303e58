"""The TF-exact U-GAT-IT's options: its architecture (nested once) and the TF training flags.

Everything else (the loss weights, learning rate, schedule length, grids, periodic evaluation)
is named and defaulted as for ``ugatit``, whose options these extend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...errors import UserError
from ...options import MAX_IMG_SIZE, option
from ..ugatit.options import UGATITOptions

DEFAULT_N_DIS = 6  # the official default depth
GAN_TYPES = ("gan", "lsgan", "wgan-gp", "wgan-lp", "dragan", "hinge")


def deepest_n_dis(img_size: int) -> int | None:
    """The largest n_dis whose global branch fits ``img_size`` (its last map must be >= 3x3:
    TF's reflect pad of 2 needs it), or None when not even n_dis 4 fits."""
    fitting = [n for n in range(4, img_size.bit_length() + 1) if img_size >> (n - 1) >= 3]
    return max(fitting, default=None)


@dataclass(frozen=True)
class UGATITTFArch:
    """Everything that fixes the shapes and semantics of the four TF-style networks.

    ``n_res`` may be any positive number: the TF code's γ/β width is ``ch · n_res``, which only
    builds for n_res 4 (where it equals the 4·ch bottleneck it scales); we always use 4·ch, what
    it means. ``smoothing`` is TF's ``--smoothing`` (default on). ``legacy_cam`` builds the CAM
    head of the code before the 2019-08-19/20 commits "fix FC_with_w" and "fix fc" (see
    ``CAM``), which checkpoints trained with that code need. Invalid values raise ``UserError``.
    """

    light: bool = option(False, "light model: the gamma/beta MLP reads pooled features (TF --light)")
    img_size: int = option(256, "training crop / test size in pixels, a multiple of 4", minimum=8,
                           maximum=MAX_IMG_SIZE,
                           aliases=("--size",))
    img_ch: int = option(3, "image channels; only 3 (RGB) is supported", choices=(3,))
    ch: int = option(64, "base channel width (TF --ch)", minimum=1)
    n_res: int = option(4, "residual blocks in encoder and decoder each (the TF code builds only 4)", minimum=1)
    n_dis: int | None = option(None, "discriminator depth: global n_dis-1, local n_dis-3 stride-2 convs "
                                     "(default 6, or the deepest that fits img_size)", minimum=4)
    smoothing: bool = option(True, "adaLIN uses clip(rho - 0.1, 0, 1) (TF --smoothing, default on)")
    legacy_cam: bool = option(False, "the CAM head of the TF code before 2019-08-20 (read from checkpoints)",
                              derived=True)

    def __post_init__(self):
        for name in ("img_size", "img_ch", "ch", "n_res"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.img_size % 4 or self.img_size < 8:
            raise UserError(f"img_size must be a multiple of 4 and at least 8 (the generator halves it twice "
                            f"and must give back its input size), got {self.img_size}")
        if self.n_dis is None:
            return  # chosen for the image size when the run is prepared (``resolved``)
        if self.n_dis < 4:
            raise UserError(f"n_dis must be at least 4 (the local discriminator has n_dis - 3 stride-2 convs), "
                            f"got {self.n_dis}")
        final = self.img_size >> self.global_strided
        if final < 3:
            deepest = deepest_n_dis(self.img_size)
            fix = f"use n_dis <= {deepest} or " if deepest else ""
            raise UserError(f"n_dis {self.n_dis} is too deep for img_size {self.img_size}: the global discriminator's "
                            f"{self.global_strided} stride-2 convs leave a {final}x{final} map and its 4x4 convs "
                            f"need at least 3x3 ({fix}img_size >= {3 << self.global_strided})")

    def resolved(self) -> UGATITTFArch:
        """This arch with an unset ``n_dis`` chosen: the official 6, or the deepest that fits."""
        if self.n_dis is not None:
            return self
        deepest = deepest_n_dis(self.img_size)
        if deepest is None:
            raise UserError(f"img_size {self.img_size} is too small for the discriminators (minimum 24)")
        return replace(self, n_dis=min(DEFAULT_N_DIS, deepest))

    @property
    def global_strided(self) -> int:
        """Stride-2 convs of the global branch (TF: conv_0 .. conv_{n_dis-2})."""
        return self.n_dis - 1

    @property
    def local_strided(self) -> int:
        """Stride-2 convs of the local branch (TF: conv_0 .. conv_{n_dis-4})."""
        return self.n_dis - 3

    @property
    def mlp_inputs(self) -> int:
        """Input width of the γ/β MLP: pooled features (light) or the whole (S/4)² · 4ch map (full)."""
        width = 4 * self.ch
        return width if self.light else (self.img_size // 4) ** 2 * width


@dataclass(frozen=True)
class UGATITTFOptions(UGATITOptions):
    """The TF code's training flags (its names in the help) on top of U-GAT-IT's options."""

    model: str = option("ugatit_tf", "which model to train")
    arch: UGATITTFArch = option(factory=UGATITTFArch)
    gan_type: str = option("lsgan", "GAN loss (TF --gan_type)", choices=GAN_TYPES)
    gp_weight: float = option(10.0, "gradient-penalty weight of wgan-gp, wgan-lp and dragan (TF --GP_ld)", minimum=0)
    n_critic: int = option(1, "discriminator updates per generator update (TF --n_critic)", minimum=1)
    weight_decay: float = option(1e-4, "L2 regularisation of the kernels, weight * sum(w^2) / 2 (TF: fixed 1e-4)",
                                 minimum=0)
    epoch_iters: int = option(10_000, "iterations per epoch of the learning-rate schedule (TF --iteration)",
                              minimum=1)
    decay_epoch: int = option(50, "first epoch of the learning-rate decay (TF --decay_epoch)", minimum=0)
    print_freq: int = option(1000, "write sample grids every N iterations", minimum=1, resumable=True)
    save_freq: int = option(1000, "write a checkpoint every N iterations (TF --save_freq)", minimum=1, resumable=True)
    same_batch: bool = option(False, "give the D step and the G step the same batch (TF: each its own)")
    augment: bool = option(True, "TF augmentation (flip, resize to S+30 or S+15, crop), applied with p 0.5 per "
                                 "image (TF --augment_flag)")
