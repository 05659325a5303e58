"""Training options: one dataclass, defaults = the official U-GAT-IT code, YAML in and out.

Precedence is dataclass defaults < ``--config FILE`` < command-line flags. The resolved config
is written to the run directory, and ``--resume`` reads it back, so a run always knows exactly
how it was made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .models.ugatit import UGATITArch, discriminator_fits

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
DEFAULT_N_DIS = 6


@dataclass
class UGATITConfig:
    """Every option of the official implementation (README maps the names), plus our own."""

    # what and where
    data: str | None = None
    out: str | None = None
    model: str = "ugatit"
    # architecture (a checkpoint must agree on these)
    light: bool = False
    img_size: int = 256
    img_ch: int = 3
    ch: int = 64
    n_res: int = 4
    n_dis: int | None = None  # None: 6, or the deepest that fits img_size
    fix_d_cam_weight: bool = False
    # schedule and optimisation
    iters: int = 1_000_000
    batch_size: int = 1
    print_freq: int = 1000
    save_freq: int = 100_000
    log_freq: int = 10
    keep_checkpoints: int = 3
    decay_flag: bool = True
    lr: float = 1e-4
    weight_decay: float = 1e-4
    adv_weight: float = 1.0
    cycle_weight: float = 10.0
    identity_weight: float = 10.0
    cam_weight: float = 1000.0
    # runtime
    device: str = "auto"
    seed: int = 0
    # speed: how a run computes, never what (train/speed.py resolves "auto"/None per device)
    faithful: bool = False
    precision: str = "auto"
    compile: str = "off"
    channels_last: bool = False
    fused_adam: bool | None = None
    sn_outputs: bool | None = None
    benchmark_flag: bool | None = None
    deterministic: bool = False
    num_workers: int | None = None
    n_samples: int = 5
    # periodic evaluation (rank 0): metrics logged as eval/*, best checkpoint kept in checkpoints/best
    eval_freq: int | None = None
    eval_metric: str = "kid"
    inception_weights: str | None = None

    def arch(self) -> UGATITArch:
        return UGATITArch(light=self.light, img_size=self.img_size, img_ch=self.img_ch, ch=self.ch,
                          n_res=self.n_res, n_dis=self.n_dis or DEFAULT_N_DIS,
                          fix_d_cam_weight=self.fix_d_cam_weight)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_n_dis(cfg: UGATITConfig) -> str | None:
    """Fix ``cfg.n_dis`` for ``cfg.img_size``; return a note to show the user when it adapted.

    The official code hard-codes global/local depths 7/5 (n_dis 6), which need img_size ≥ 96.
    Below that, the default shrinks to the deepest pair that runs; an explicit value that cannot
    run is refused rather than silently changed.
    """
    def fits(n_dis: int) -> bool:
        return n_dis >= 4 and discriminator_fits(n_dis + 1, cfg.img_size) and discriminator_fits(n_dis - 1, cfg.img_size)

    if cfg.n_dis is not None:
        if not fits(cfg.n_dis):
            raise UserError(f"--n-dis {cfg.n_dis} (global depth {cfg.n_dis + 1}, local {cfg.n_dis - 1}) cannot run "
                            f"at --img-size {cfg.img_size}; use a smaller --n-dis or a larger image size")
        return None
    n_dis = DEFAULT_N_DIS
    while n_dis > 4 and not fits(n_dis):
        n_dis -= 1
    if not fits(n_dis):
        raise UserError(f"--img-size {cfg.img_size} is too small for the discriminators (minimum 24)")
    cfg.n_dis = n_dis
    if n_dis != DEFAULT_N_DIS:
        return (f"img_size {cfg.img_size} is below 96: discriminator depths reduced to global {n_dis + 1}, "
                f"local {n_dis - 1} (n_dis {n_dis}; the official 7/5 need img_size >= 96)")
    return None


def validate(cfg: UGATITConfig) -> None:
    """Refuse option values the networks or the loop cannot use, naming the option."""
    if cfg.img_size % 4:
        raise UserError(f"--img-size must be a multiple of 4 (got {cfg.img_size})")
    if cfg.img_ch != 3:
        raise UserError(f"--img-ch {cfg.img_ch} is not supported: images are decoded as RGB (3 channels), "
                        "as the official code always does")
    from .evaluate import METRICS
    if cfg.eval_metric not in METRICS:
        raise UserError(f"--eval-metric must be one of {', '.join(METRICS)} (got {cfg.eval_metric})")
    if cfg.eval_freq is not None and cfg.eval_freq < 1:
        raise UserError(f"--eval-freq must be at least 1 (got {cfg.eval_freq})")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)} (got {cfg.precision})")
    if cfg.compile not in COMPILE_MODES:
        raise UserError(f"--compile must be one of {', '.join(COMPILE_MODES)} (got {cfg.compile})")
    for name in ("iters", "batch_size", "print_freq", "save_freq", "log_freq", "ch", "n_res", "keep_checkpoints"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; one-line errors for missing or malformed files."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    return raw


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a U-GAT-IT config file into a dict of known option names, refusing unknown keys."""
    raw = read_yaml_mapping(path)
    known = {f.name for f in fields(UGATITConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return raw


def build_config(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> UGATITConfig:
    """Defaults, then ``base`` (a YAML file's values), then ``overrides`` (explicit CLI flags)."""
    values = {**(base or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return UGATITConfig(**values)


def save_yaml(cfg: UGATITConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
