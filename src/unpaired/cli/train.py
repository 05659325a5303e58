"""``unpaired train``: train a model on a two-domain folder (or resume a run)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from ..config import COMPILE_MODES, PRECISIONS, UGATITConfig
from ..errors import UserError

HELP = "train U-GAT-IT (or --model photo2cartoon / stargan_v2) on a dataset folder, or continue a run with --resume"

# One help line per option; the flags themselves are generated from UGATITConfig's fields.
OPTION_HELP = {
    "data": "dataset folder holding trainA, trainB, testA, testB (official: --dataset)",
    "out": "run directory for config, checkpoints, samples, logs (official: --result_dir/--dataset)",
    "model": "which model to train",
    "light": "light model: γ/β MLP on pooled features (less memory; official --light)",
    "img_size": "training crop / test size in pixels, a multiple of 4",
    "img_ch": "image channels; only 3 (RGB) is supported, as in the official code",
    "ch": "base channel width (official --ch)",
    "n_res": "residual blocks in encoder and decoder each",
    "n_dis": "discriminator depth: global n_dis+1, local n_dis-1 layers (default 6, reduced below 96 px)",
    "fix_d_cam_weight": "fix an official quirk: scale D's CAM features by the spectrally normalised weight",
    "iters": "total training iterations (official --iteration)",
    "batch_size": "images per domain per iteration",
    "print_freq": "write sample grids every N iterations",
    "save_freq": "write a checkpoint every N iterations",
    "log_freq": "log losses to TensorBoard every N iterations",
    "keep_checkpoints": "keep only the newest K checkpoints",
    "decay_flag": "linear learning-rate decay over the second half",
    "lr": "Adam learning rate for G and D",
    "weight_decay": "Adam (coupled L2) weight decay",
    "adv_weight": "adversarial loss weight",
    "cycle_weight": "cycle-consistency loss weight",
    "identity_weight": "identity loss weight",
    "cam_weight": "generator CAM loss weight",
    "device": "auto, cpu, cuda or cuda:N",
    "seed": "random seed for initialisation and the data stream",
    "faithful": "compute exactly as the official code (fp32, eager, default kernels; what the parity tests "
                "check) instead of the fastest way for this device (see benchmarks/README.md)",
    "precision": "fp32, bf16 or fp16 autocast (fp16 with loss scaling); auto: bf16 on GPUs (fp16 where bf16 "
                 "is missing), fp32 on CPUs",
    "compile": "torch.compile mode for every network (slower on CPUs, and compiling takes minutes; "
               "not yet measured on a GPU)",
    "channels_last": "NHWC memory layout for the networks (slower on CPUs; not yet measured on a GPU)",
    "fused_adam": "Adam's fused kernel (equal to the default loop up to rounding); unset: on, off with --faithful",
    "sn_outputs": "spectral norm divides the discriminator convs' outputs by sigma instead of their weights "
                  "(equal math, rounded differently, half the discriminator time on CPUs); unset: on, off with "
                  "--faithful",
    "benchmark_flag": "set cudnn.benchmark; unset: on for GPUs unless --faithful or --deterministic",
    "deterministic": "use deterministic algorithms only (exactly reproducible, slower on GPU)",
    "num_workers": "data-loading worker processes (default: up to 4)",
    "n_samples": "train and test images per sample grid",
    "eval_freq": "score the generators on the test set every N iterations and keep checkpoints/best",
    "eval_metric": "metric that picks the best checkpoint: kid, mean_kid, fid (need Inception), l1, psnr, ssim, lpips (need DATA/pairs.csv)",
    "inception_weights": "local Inception weights file for KID/FID (offline use; see unpaired eval)",
}
# photo2cartoon options (`--model photo2cartoon`).
OPTION_HELP.update({
    "face_id_weight": "photo2cartoon face-identity loss weight (needs --face-id-weights)",
    "face_id_weights": "photo2cartoon MobileFaceNet weights (model_mobilefacenet.pth); without it the ID loss is off",
    "rho_clipper": "photo2cartoon upper bound for every rho", "w_clipper": "photo2cartoon upper bound for the SoftAdaLIN blend weights",
})
# StarGAN v2 options (`--model stargan_v2`).
OPTION_HELP.update({
    "preset": "StarGAN v2 loss weights of the paper for this kind of data: celeba_hq or afhq",
    "style_dim": "StarGAN v2 style code size", "latent_dim": "StarGAN v2 latent code size",
    "max_conv_dim": "StarGAN v2 widest conv layer", "w_hpf": "StarGAN v2 high-pass filter weight (> 0 needs --fan-weights)",
    "fan_weights": "StarGAN v2 face-landmark network weights (official wing.ckpt), for --w-hpf > 0",
"lambda_reg": "StarGAN v2 R1 weight",
    "lambda_cyc": "StarGAN v2 cycle weight", "lambda_sty": "StarGAN v2 style reconstruction weight",
    "lambda_ds": "StarGAN v2 diversity-sensitive weight (decays linearly to 0)",
    "ds_iter": "StarGAN v2 iterations over which lambda_ds decays", "f_lr": "StarGAN v2 mapping-network learning rate",
    "beta1": "StarGAN v2 Adam beta1", "beta2": "StarGAN v2 Adam beta2", "ema_beta": "StarGAN v2 EMA decay",
    "randcrop_prob": "StarGAN v2 probability of a random resized crop",
    "val_batch_size": "StarGAN v2 validation images per sample grid",
    "num_outs_per_domain": "StarGAN v2 outputs per input for evaluation",
})
DERIVED = {"domains"}  # filled in from the data, recorded in config.yaml, never given
ALIASES = {"iters": ["--iteration"], "data": ["--dataset"], "out": ["--result-dir"]}
CHOICES = {"precision": list(PRECISIONS), "compile": list(COMPILE_MODES), "preset": ["celeba_hq", "afhq"]}


def _config_fields() -> dict[str, tuple[dataclasses.Field, type]]:
    """Every option of every model's config, once (first definition wins), with its config class."""
    from ..train.recipes import config_classes

    found: dict[str, tuple[dataclasses.Field, type]] = {}
    for cls in config_classes().values():
        for field in dataclasses.fields(cls):
            if field.name not in DERIVED:
                found.setdefault(field.name, (field, cls))
    return found


def _flag_type(field: dataclasses.Field, cls: type):
    """The Python type a flag parses to, from the field's annotation ('int | None' → int)."""
    hints = typing.get_type_hints(cls)[field.name]
    args = [a for a in typing.get_args(hints) if a is not type(None)]
    kind = args[0] if args else hints
    return str if typing.get_origin(kind) is list else kind


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; defaults stay None so only explicit flags override."""
    from ..train.recipes import RECIPES

    for name, (field, cls) in _config_fields().items():
        flags = [f"--{name.replace('_', '-')}", *ALIASES.get(name, [])]
        kind = _flag_type(field, cls)
        default = field.default if field.default is not dataclasses.MISSING else None
        text = f"{OPTION_HELP[name]} (default: {default})"
        if name == "model":
            parser.add_argument(*flags, dest=name, choices=list(RECIPES), default=None,
                                help="which model to train (default: ugatit)")
        elif kind is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(*flags, dest=name, type=kind, default=None, choices=CHOICES.get(name),
                                metavar=name.upper() if name not in CHOICES else None, help=text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--config", type=Path, help="YAML file of options; flags given on the command line win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint")
    parser.add_argument("--auto-resume", action="store_true",
                        help="resume if --out already holds a run, else start it (for torchrun --max-restarts "
                             "and job schedulers that restart the same command)")


def requested_options(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in _config_fields() if getattr(args, name) is not None}


def run(args: argparse.Namespace) -> int:
    from ..train.loop import Training
    from ..train.recipes import recipe_for

    base = load_yaml_any(args.config) if args.config else None
    requested = requested_options(args)
    out = requested.get("out") or (base or {}).get("out")
    if args.resume or (args.auto_resume and out and (Path(out) / "config.yaml").is_file()):
        overrides = {**(base or {}), **requested}
        Training(UGATITConfig(out=out), resume=True, requested=overrides).run()
        return 0
    recipe = recipe_for(requested.get("model") or (base or {}).get("model") or "ugatit")
    known = {f.name for f in dataclasses.fields(recipe.config_cls)}
    for name in (*requested, *(base or {})):
        if name not in known:
            raise UserError(f"--{name.replace('_', '-')} is not an option of --model {recipe.config_cls().model}")
    Training(recipe.make_config(requested, base)).run()
    return 0


def load_yaml_any(path: Path) -> dict:
    """A config file's options, checked against every model's option names."""
    from ..config import read_yaml_mapping
    raw = read_yaml_mapping(path)
    unknown = sorted(set(raw) - set(_config_fields()))
    if unknown:
        raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return raw
