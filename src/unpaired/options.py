"""Run options: frozen dataclasses whose fields are the flags of ``unpaired train``.

``RunOptions`` holds what every run has (where, how long, on what, how fast); each model family
extends it with its own losses and schedule and nests its architecture once, as ``arch``. Every
field is declared with ``option(...)``, which records its help text, its valid range or choices
and whether a resumed run may change it; that one declaration drives the command-line flags,
the checks of values from YAML files and flags alike (``build``), and resuming.

Precedence is: the family's defaults < ``--config FILE`` < command-line flags. The resolved
options are written to the run directory as ``config.yaml``, and ``--resume`` reads them back.
Options are never changed in place: derived values (a discriminator depth chosen for the image
size, the domains found in the data) make a new object with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import write_text_atomic

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
MEMORY_MODES = ("normal", "lean")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit value
# The largest square picture side a model runs at: 4 megapixels, four times what inference puts
# through one forward pass in all; beyond it a single picture's activations outgrow a machine's
# memory, and the kernel kills the process before any error can be shown.
MAX_IMG_SIZE = 2048


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
           minimum: float | None = None, maximum: float | None = None, above: float | None = None,
           choices: Iterable[Any] | None = None, aliases: Iterable[str] = (), resumable: bool = False,
           derived: bool = False, reads: bool = False) -> Any:
    """A dataclass field with what the flag and the checks need.

    ``minimum``/``maximum`` bound a number inclusively, ``above`` exclusively; ``choices`` lists
    the valid strings; ``resumable`` options may change when a run is resumed (every other option
    defines the run); ``derived`` options are filled in by the run itself (never a flag);
    ``reads``: the option names a file the run reads, which nothing the run writes may overlap
    (see ``guard``).
    """
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "above": above,
            "choices": tuple(choices) if choices is not None else None, "aliases": tuple(aliases),
            "resumable": resumable, "derived": derived, "reads": reads}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunOptions:
    """What every run has: data and run directory, schedule, runtime, and how it computes."""

    # what and where
    data: str | None = option(None, "dataset folder (official: --dataset)", aliases=("--dataset",), resumable=True)
    out: str | None = option(None, "run directory for config, checkpoints, samples, logs (official: --result_dir)",
                             aliases=("--result-dir",), resumable=True)
    model: str = option("ugatit", "which model to train")
    # schedule
    iters: int = option(1_000_000, "total training iterations (official: --iteration)", minimum=1,
                        aliases=("--iteration",), resumable=True)
    batch_size: int = option(1, "images per domain per iteration and process", minimum=1)
    print_freq: int = option(1000, "write sample grids every N iterations", minimum=1, resumable=True)
    save_freq: int = option(100_000, "write a checkpoint every N iterations", minimum=1, resumable=True)
    log_freq: int = option(10, "log losses to TensorBoard every N iterations", minimum=1, resumable=True)
    keep_checkpoints: int = option(3, "keep only the newest K checkpoints", minimum=1, resumable=True)
    # runtime
    device: str = option("auto", "auto, cpu, cuda or cuda:N", resumable=True)
    seed: int = option(0, "random seed for initialisation and the data stream", minimum=0, maximum=MAX_SEED)
    deterministic: bool = option(False, "deterministic algorithms only (exactly reproducible, slower on GPU)",
                                 resumable=True)
    num_workers: int | None = option(None, "data-loading worker processes (default: up to 4)", minimum=0,
                                     resumable=True)
    # how it computes (training/speed.py resolves unset values per device), never what
    faithful: bool = option(False, "compute exactly as the official code (fp32, eager, default kernels; what the "
                                   "parity tests check) instead of the fastest way for this device", resumable=True)
    precision: str = option("auto", "fp32, bf16 or fp16 autocast (fp16 with loss scaling); auto: bf16 on GPUs "
                                    "(fp16 where bf16 is missing), fp32 on CPUs", choices=PRECISIONS, resumable=True)
    compile: str = option("off", "torch.compile mode for every network (opt-in: see README, Training speed)",
                          choices=COMPILE_MODES, resumable=True)
    channels_last: bool = option(False, "NHWC memory layout for the networks (opt-in: see README, Training speed)",
                                 resumable=True)
    fused_adam: bool | None = option(None, "Adam's fused kernel (equal to the default loop up to rounding); "
                                           "unset: the family's fast default, off with --faithful", resumable=True)
    sn_outputs: bool | None = option(None, "spectral norm divides the discriminator convs' outputs by sigma instead "
                                           "of their weights (equal math, rounded differently); unset: on where the "
                                           "model has spectral norm, off with --faithful", resumable=True)
    benchmark_flag: bool | None = option(None, "set cudnn.benchmark; unset: on for GPUs unless --faithful or "
                                               "--deterministic", resumable=True)
    memory: str = option("normal", "lean: recompute the networks' blocks in the backward pass instead of keeping "
                                   "their activations, and free gradients after each optimiser step (same numbers, "
                                   "a fraction of the memory, slower: see README, Training memory)",
                         choices=MEMORY_MODES, resumable=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- the option fields


def option_fields(cls: type) -> dict[str, tuple[dataclasses.Field, type]]:
    """Every option of ``cls`` by name, the nested ``arch`` fields flattened in, with the class holding each.

    Names are unique across the two levels (a flag names one option).
    """
    found: dict[str, tuple[dataclasses.Field, type]] = {}
    for f in fields(cls):
        inner = _hint(cls, f.name)
        pairs = [(sub, inner) for sub in fields(inner)] if dataclasses.is_dataclass(inner) else [(f, cls)]
        for sub, holder in pairs:
            assert sub.name not in found, f"{cls.__name__}: two options are called {sub.name}"
            found[sub.name] = (sub, holder)
    return found


@typing.no_type_check
def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def read_paths(options: Any) -> list[Path]:
    """The files ``options`` name for the run to read (the options declared with ``reads=True``)."""
    return [Path(_current(options, name)) for name, (f, _) in option_fields(type(options)).items()
            if f.metadata.get("reads") and _current(options, name) is not None]


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# ----------------------------------------------------------------------------- checking values


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the type a value must have, whether None is allowed) of an annotation like ``int | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


class Invalid(Exception):
    """What is wrong with a value, as the rest of a sentence that starts with the option's flag."""


def check_value(name: str, value: Any, hint: Any, meta: Mapping[str, Any], source: str) -> Any:
    """``value`` as the option's type, or a one-line UserError naming the option and ``source``.

    Values from YAML are checked exactly like flags: ``light: "false"`` (a string) is refused
    rather than read as true, and a number is refused outside its range or when not finite.
    """
    try:
        return checked(value, hint, meta)
    except Invalid as exc:
        raise UserError(f"{flag_name(name)} {exc}" + (f" (in {source})" if source else "")) from None


def checked(value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` as the type ``hint`` names, within the bounds of ``meta`` (see ``option``); ``Invalid`` if not."""
    kind, optional = _base_type(hint)
    if value is None:
        if optional:
            return None
        raise Invalid("needs a value")
    if kind is bool:
        if not isinstance(value, bool):
            raise Invalid(f"must be true or false, got {_describe(value)}")
        return value
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be a whole number, got {_describe(value)}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"must be a number, got {_describe(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise Invalid(f"must be a finite number, got {value}")
    elif kind is str:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, got {_describe(value)}")
    elif typing.get_origin(kind) in (tuple, list):
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise Invalid(f"must be a list of names, got {_describe(value)}")
        value = tuple(value)
    _check_range(value, meta)
    return value


def _check_range(value: Any, meta: Mapping[str, Any]) -> None:
    choices, low, high, above = meta.get("choices"), meta.get("minimum"), meta.get("maximum"), meta.get("above")
    if choices is not None and value not in choices:
        raise Invalid(f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    if low is not None and value < low:
        raise Invalid(f"must be at least {low:g}, got {value}")
    if high is not None and value > high:
        raise Invalid(f"must be at most {high if isinstance(high, int) else f'{high:g}'}, got {value}")
    if above is not None and not value > above:
        raise Invalid(f"must be above {above:g}, got {value}")


# ----------------------------------------------------------------------------- building options


def _flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping as flat option names: a nested ``arch:`` mapping (config.yaml) is merged in."""
    flat = {key: value for key, value in values.items() if key != "arch"}
    if isinstance(values.get("arch"), Mapping):
        flat.update(values["arch"])
    elif "arch" in values:
        flat["arch"] = values["arch"]  # refused below as not a mapping
    return flat


def build(cls: type, *layers: tuple[str, Mapping[str, Any]]) -> Any:
    """Options of ``cls`` from its defaults and ``layers`` (source description, values), later ones winning.

    Values may be flat (flags, hand-written YAML) or nest the architecture under ``arch:`` (the
    config.yaml a run writes). Every value is type- and range-checked; an unknown name is refused
    with the source that gave it. ``None`` in a layer means "not given". A class with ``PRESETS``
    (name -> values) fills what was not given from the preset its ``preset`` option names.
    """
    known = option_fields(cls)
    chosen: dict[str, Any] = {}
    for source, values in layers:
        for name, value in _flatten(values).items():
            if name not in known:
                model = default_of(next(f for f in fields(cls) if f.name == "model"))
                raise UserError(f"{source}: {name!r} is not an option of --model {model}")
            if value is None:
                continue
            f, holder = known[name]
            chosen[name] = check_value(name, value, _hint(holder, name), f.metadata, source)
    presets = getattr(cls, "PRESETS", {})
    for name, value in presets.get(chosen.get("preset"), {}).items():
        chosen.setdefault(name, value)  # a preset's values sit between the defaults and what was given
    return _construct(cls, chosen)


def _construct(cls: type, chosen: Mapping[str, Any]) -> Any:
    """``cls`` with the flat ``chosen`` values placed at their level (options or nested arch)."""
    top = {}
    for f in fields(cls):
        inner = _hint(cls, f.name)
        if dataclasses.is_dataclass(inner):
            defaults = default_of(f)
            sub = {g.name: chosen[g.name] for g in fields(inner) if g.name in chosen}
            top[f.name] = dataclasses.replace(defaults, **sub)
        elif f.name in chosen:
            top[f.name] = chosen[f.name]
    return cls(**top)


def build_arch(cls: type, values: Mapping[str, Any], source: str = "the recorded architecture") -> Any:
    """An architecture dataclass from what a weights file or graph records, each value checked like
    the option it is (a file may be damaged or edited); names this release does not know are ignored."""
    known = {f.name: f for f in fields(cls)}
    return cls(**{name: check_value(name, value, _hint(cls, name), known[name].metadata, source)
                  for name, value in values.items() if name in known})


def changed(saved: Any, requested: Mapping[str, Any], source: str = "the command line") -> tuple[Any, list[str]]:
    """``saved`` options with the ``requested`` changes, refusing those that would change what the run is.

    Returns the new options and one note per change ("iters: 10 -> 20").
    """
    known = option_fields(type(saved))
    current = {name: _current(saved, name) for name in known}
    notes, updates = [], {}
    for name, value in requested.items():
        if name not in known:
            raise UserError(f"{source}: {name!r} is not an option of --model {saved.model}")
        if value is None:
            continue
        f, holder = known[name]
        value = check_value(name, value, _hint(holder, name), f.metadata, source)
        if value == current[name]:
            continue
        if not f.metadata.get("resumable"):
            raise UserError(f"cannot resume with {flag_name(name)} {value}: the run was made with "
                            f"{name}={current[name]!r} (start a new run with another --out)")
        notes.append(f"{name}: {current[name]!r} -> {value!r}")
        updates[name] = value
    return _construct(type(saved), {**current, **updates}), notes


def _current(options: Any, name: str) -> Any:
    if hasattr(options, name):
        return getattr(options, name)
    return getattr(options.arch, name)


def save_yaml(options: Any, path: Path, header: str = "") -> None:
    """Write ``options`` as YAML that ``build`` reads back (atomically; ``header``: lines of comment first)."""
    import yaml

    write_text_atomic(path, header + yaml.safe_dump(_plain(options.to_dict()), sort_keys=False))


def _plain(value: Any) -> Any:
    """Tuples as lists, so the YAML is plain (safe_load reads it back)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
