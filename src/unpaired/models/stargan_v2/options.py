"""StarGAN v2's options: the official training options and paper defaults, the architecture nested
once (with the domain names, which the data fixes), the paper's per-dataset presets and checks.

Official names differ in places (the comment says which); the official directories are replaced
by the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import UserError
from ...options import MAX_IMG_SIZE, MAX_SEED, RunOptions, option

MIN_IMG_SIZE = 32  # smallest size with one down/up-sampling block in the generator
MIN_HPF_IMG_SIZE = 128  # the finest face-mask skip (img/8) must lie above the 8 px bottleneck
EMA_INITS = ("before", "after")  # when the EMA networks are copied from the trained ones (see --ema-init)

# The paper's per-dataset settings (official README commands); explicit options override them.
PRESETS: dict[str, dict[str, Any]] = {
    "celeba_hq": {"lambda_reg": 1.0, "lambda_sty": 1.0, "lambda_ds": 1.0, "lambda_cyc": 1.0, "w_hpf": 1.0},
    "afhq": {"lambda_reg": 1.0, "lambda_sty": 1.0, "lambda_ds": 2.0, "lambda_cyc": 1.0, "w_hpf": 0.0},
}


@dataclass(frozen=True)
class StarGANv2Arch:
    """Everything that fixes the networks' shapes, plus the domain names a checkpoint serves."""

    img_size: int = option(256, "image size, a power of two >= 32", minimum=MIN_IMG_SIZE,
                           maximum=MAX_IMG_SIZE, aliases=("--size",))
    style_dim: int = option(64, "style code size", minimum=1)
    latent_dim: int = option(16, "latent code size", minimum=1)
    max_conv_dim: int = option(512, "widest conv layer", minimum=1)
    w_hpf: float = option(0.0, "high-pass filter weight of the face masks (> 0 needs --fan-weights; official "
                               "default 1, for CelebA-HQ)", minimum=0)
    domains: tuple[str, ...] = option((), "the sub-folders of DATA/train, in label order (filled in from the data)",
                                      derived=True)

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def check(self) -> None:
        """Refuse what the networks cannot be built for, naming the option."""
        if self.img_size < MIN_IMG_SIZE or self.img_size & (self.img_size - 1):
            raise UserError(f"--img-size must be a power of two >= {MIN_IMG_SIZE} for stargan_v2 (got {self.img_size})")
        if self.w_hpf > 0 and self.img_size < MIN_HPF_IMG_SIZE:
            raise UserError(f"--w-hpf > 0 (face masks) needs --img-size >= {MIN_HPF_IMG_SIZE} (got {self.img_size})")
        if self.domains and (len(self.domains) < 2 or len(set(self.domains)) != len(self.domains)):
            raise UserError(f"stargan_v2 needs at least two distinct domains (got {list(self.domains)})")


@dataclass(frozen=True)
class StarGANv2Options(RunOptions):
    """The official training options with the paper's defaults."""

    PRESETS = PRESETS  # bundles of defaults chosen by --preset (options.build applies them)

    model: str = option("stargan_v2", "which model to train")
    preset: str | None = option(None, "the paper's loss weights (and w_hpf) for this kind of data", choices=PRESETS)
    arch: StarGANv2Arch = option(factory=StarGANv2Arch)
    fan_weights: str | None = option(None, "the official face-landmark network wing.ckpt (official --wing_path), "
                                           "needed for --w-hpf > 0", resumable=True, reads=True)
    # losses
    lambda_reg: float = option(1.0, "R1 regularisation weight", minimum=0)
    lambda_cyc: float = option(1.0, "cycle-consistency weight", minimum=0)
    lambda_sty: float = option(1.0, "style reconstruction weight", minimum=0)
    lambda_ds: float = option(1.0, "diversity-sensitive weight (decays linearly to 0 over --ds-iter)", minimum=0)
    ds_iter: int = option(100_000, "iterations over which lambda_ds decays", minimum=1)
    # schedule and optimisation
    iters: int = option(100_000, "total training iterations (official --total_iters)", minimum=1,
                        aliases=("--iteration",), resumable=True)
    batch_size: int = option(8, "images per iteration and process", minimum=1)
    lr: float = option(1e-4, "learning rate of G, E and D", minimum=0)
    f_lr: float = option(1e-6, "learning rate of the mapping network", minimum=0)
    beta1: float = option(0.0, "Adam beta1", minimum=0, maximum=1)
    beta2: float = option(0.99, "Adam beta2", minimum=0, maximum=1)
    weight_decay: float = option(1e-4, "Adam (coupled L2) weight decay", minimum=0)
    ema_beta: float = option(0.999, "decay of the EMA networks that sample (0.99 for short trials)",
                             minimum=0, maximum=1)
    ema_init: str = option("before", "copy the EMA networks before the He initialisation, as the official code "
                                     "(they start from PyTorch's default init), or after it (they start equal to "
                                     "the trained networks; unpaired 0.1's order); default: before",
                           choices=EMA_INITS)
    randcrop_prob: float = option(0.5, "probability of a random resized crop", minimum=0, maximum=1)
    # logging and checkpoints
    log_freq: int = option(10, "log losses every N iterations (official --print_every)", minimum=1, resumable=True)
    print_freq: int = option(5000, "write sample grids every N iterations (official --sample_every)", minimum=1,
                             resumable=True)
    save_freq: int = option(10_000, "write a checkpoint every N iterations (official --save_every)", minimum=1,
                            resumable=True)
    val_batch_size: int = option(32, "validation images per sample grid (at most 8 are drawn)", minimum=1,
                                 resumable=True)
    num_outs_per_domain: int = option(10, "outputs per input for evaluation", minimum=1, resumable=True)
    seed: int = option(777, "random seed for initialisation and the data stream", minimum=0, maximum=MAX_SEED)


def validate(opts: StarGANv2Options) -> None:
    """Refuse combinations the networks or the loop cannot use (single values are checked on entry)."""
    if opts.data is None:
        raise UserError("--data DIR is required: a folder with train/<domain>/ and val/<domain>/ sub-folders")
    opts.arch.check()
    if opts.arch.w_hpf > 0 and not opts.fan_weights:
        raise UserError("--w-hpf > 0 uses face masks from the pretrained FAN: pass --fan-weights wing.ckpt "
                        "(the official file), or --w-hpf 0 to train without them")
