"""``unpaired train``: train a model on a dataset folder, or resume a run.

Two passes: the first reads only ``--model`` (or, on ``--resume``, the run's config.yaml), the
second parses the flags of that family's options, so ``train --model M --help`` lists M's
options with M's defaults only.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from ..errors import UserError

HELP = "train U-GAT-IT (or another --model) on a dataset folder, or continue a run with --resume"
PASS_THROUGH = True  # the family's options are parsed in run(), once the family is known


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The first pass: only what chooses the family (everything else passes through)."""
    parser.add_argument("--model", default=None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--auto-resume", action="store_true")
    parser.add_argument("--out", "--result-dir", dest="out", default=None)
    parser.add_argument("-h", "--help", action="store_true", dest="show_help")


def _family_parser(name: str, options_cls: type, models: list[str]) -> argparse.ArgumentParser:
    """The second pass: one flag per option of ``options_cls`` (arch fields flat), defaults None so
    that only explicit flags override the config file and the family's defaults."""
    from .. import options as opt
    from . import Parser

    parser = Parser(prog="unpaired train", allow_abbrev=False,
                    description=f"{HELP}. Options of --model {name} (others: "
                                f"{', '.join(m for m in models if m != name)}: see unpaired train --model M --help).")
    parser.add_argument("--config", type=Path, help="YAML file of options; flags given on the command line win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest complete checkpoint")
    parser.add_argument("--auto-resume", action="store_true",
                        help="resume if --out already holds a run, else start it (for torchrun --max-restarts "
                             "and job schedulers that restart the same command)")
    defaults = options_cls()  # the family's defaults, its nested arch's included (photo2cartoon: ch 32)
    for field_name, (f, holder) in opt.option_fields(options_cls).items():
        meta = f.metadata
        if meta.get("derived"):
            continue
        flags = [opt.flag_name(field_name), *meta.get("aliases", ())]
        default = getattr(defaults if holder is options_cls else defaults.arch, field_name)
        text = meta.get("help", "")
        if "default" not in text:  # help that explains its default says it in words
            text += f" (default: {default})"
        if field_name == "model":
            parser.add_argument(*flags, dest=field_name, choices=models, help=f"which model to train (default: {name})")
        elif _kind(holder, field_name) is bool:
            parser.add_argument(*flags, dest=field_name, action=argparse.BooleanOptionalAction, help=text)
        else:
            choices = meta.get("choices")
            parser.add_argument(*flags, dest=field_name, type=_kind(holder, field_name),
                                choices=list(choices) if choices else None,
                                metavar=None if choices else field_name.upper(), help=text)
    return parser


def _kind(holder: type, name: str):
    """The Python type a flag parses to, from the field's annotation ('int | None' → int)."""
    hint = typing.get_type_hints(holder)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args and typing.get_origin(hint) is not tuple else hint


def _chosen_model(first: argparse.Namespace, resuming: bool) -> str:
    """The family: --model, else the resumed run's, else the config file's, else the default."""
    from ..files import read_yaml_mapping
    from ..models import registry
    from ..run import RunDir

    if first.model:
        return first.model
    if resuming and first.out and RunDir(Path(first.out)).is_run():
        return RunDir(Path(first.out)).model()
    if first.config is not None:
        model = read_yaml_mapping(first.config).get("model")
        if isinstance(model, str):
            return model
    return registry.DEFAULT


def run(first: argparse.Namespace, rest: list[str]) -> int:
    from .. import options as opt
    from ..files import read_yaml_mapping
    from ..models import registry
    from ..run import RunDir
    from ..training.loop import Training

    resuming = first.resume or (first.auto_resume and first.out is not None and RunDir(Path(first.out)).is_run())
    name = _chosen_model(first, resuming)
    options_cls = registry.family(name).options
    parser = _family_parser(name, options_cls, registry.names())
    if first.show_help:
        parser.print_help()
        return 0
    given = vars(parser.parse_args(rest))
    for key in ("config", "resume", "auto_resume"):
        given.pop(key)
    given = {key: value for key, value in given.items() if value is not None}
    if first.model:
        given["model"] = first.model
    if first.out:
        given["out"] = first.out
    config = read_yaml_mapping(first.config) if first.config else {}
    if resuming:
        out = given.get("out") or config.get("out")
        if not out:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        Training.resume(out, {**config, **given}).run()
        return 0
    layers = [(f"config file {first.config}", config)] if first.config else []
    options = opt.build(options_cls, *layers, ("the command line", given))
    Training(options).run()
    return 0
