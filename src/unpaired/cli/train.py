"""``unpaired train``: train a model on a two-domain folder (or resume a run)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from ..config import UGATITConfig, build_config, load_yaml

HELP = "train U-GAT-IT on DIR/{trainA,trainB,testA,testB}, or continue a run with --resume"

# One help line per option; the flags themselves are generated from UGATITConfig's fields.
OPTION_HELP = {
    "data": "dataset folder holding trainA, trainB, testA, testB (official: --dataset)",
    "out": "run directory for config, checkpoints, samples, logs (official: --result_dir/--dataset)",
    "model": "which model to train",
    "light": "light model: γ/β MLP on pooled features (less memory; official --light)",
    "img_size": "training crop / test size in pixels, a multiple of 4",
    "img_ch": "image channels, 1 or 3 (the official code ignores --img_ch)",
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
    "precision": "fp32 (faithful to the official numbers), bf16 or fp16 (autocast)",
    "benchmark_flag": "set cudnn.benchmark",
    "deterministic": "use deterministic algorithms only (exactly reproducible, slower on GPU)",
    "num_workers": "data-loading worker processes (default: up to 4)",
    "n_samples": "train and test images per sample grid",
}
ALIASES = {"iters": ["--iteration"], "data": ["--dataset"], "out": ["--result-dir"]}
CHOICES = {"model": ["ugatit"], "precision": ["fp32", "bf16", "fp16"]}


def _flag_type(field: dataclasses.Field):
    """The Python type a flag parses to, from the field's annotation ('int | None' → int)."""
    hints = typing.get_type_hints(UGATITConfig)[field.name]
    args = [a for a in typing.get_args(hints) if a is not type(None)]
    return args[0] if args else hints


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per UGATITConfig field; defaults stay None so only explicit flags override."""
    for field in dataclasses.fields(UGATITConfig):
        flags = [f"--{field.name.replace('_', '-')}", *ALIASES.get(field.name, [])]
        kind = _flag_type(field)
        default = field.default
        text = f"{OPTION_HELP[field.name]} (default: {default})"
        if kind is bool:
            parser.add_argument(*flags, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(*flags, dest=field.name, type=kind, default=None, choices=CHOICES.get(field.name),
                                metavar=field.name.upper() if field.name not in CHOICES else None, help=text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--config", type=Path, help="YAML file of options; flags given on the command line win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint")


def requested_options(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(UGATITConfig)}


def run(args: argparse.Namespace) -> int:
    from ..train.loop import Training

    base = load_yaml(args.config) if args.config else None
    requested = requested_options(args)
    if args.resume:
        overrides = {**(base or {}), **{k: v for k, v in requested.items() if v is not None}}
        Training(UGATITConfig(out=overrides.get("out")), resume=True, requested=overrides).run()
    else:
        Training(build_config(requested, base)).run()
    return 0
