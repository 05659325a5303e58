"""``load_translator``: any model file a user has, as the right family's translator.

Accepted: a run folder (its newest complete checkpoint), a checkpoint folder, one of our
``weights.safetensors`` files, an ``.onnx`` graph written by ``unpaired export`` (run on
onnxruntime), or an official file of a family's authors (a U-GAT-IT or photo2cartoon ``.pt``, a
TF checkpoint folder or prefix), recognised by the families themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..errors import UserError
from ..models.registry import families, family, names
from ..runtime import resolve_device
from ..run import RunDir
from .backends import onnx_metadata, onnx_session
from .translator import Translator

log = logging.getLogger("unpaired")


@dataclass(frozen=True)
class ModelFile:
    """What a path holds: ``kind`` "ours" (our weights file), "onnx" (an exported graph) or
    "official" (a family's authors' file), the model family, and how to read it."""

    kind: str
    model: str
    file: Path
    meta: dict[str, str] = field(default_factory=dict)
    arch: Any = None  # official files: read off the tensors
    states: ckpt.States | None = None  # official files: every network they hold, in our layout
    read: Callable[[Collection[str]], ckpt.States] | None = None


def _in_folder(folder: Path) -> ModelFile | None:
    """The weights of a checkpoint folder, or of a run folder's newest checkpoint that reads back."""
    if (folder / ckpt.WEIGHTS).is_file():
        return _ours(folder / ckpt.WEIGHTS)
    found = ckpt.newest(RunDir(folder).checkpoints, lambda checkpoint: _ours(checkpoint / ckpt.WEIGHTS))
    return found[1] if found else None


def run_checkpoint(run: RunDir) -> ModelFile:
    """The newest checkpoint of a run whose weights read back: what test, eval and translate use.
    A damaged newer one (truncated, unknown model, unusable architecture) is named and skipped."""
    found = _in_folder(run.root) if run.checkpoints.is_dir() else None
    if found is None:
        raise UserError(f"{run.root} has no complete checkpoint (checkpoints/<step>/{ckpt.WEIGHTS})")
    return found


def _ours(file: Path) -> ModelFile:
    meta = ckpt.load_weights(file, nets=())[1]
    return ModelFile("ours", _recorded_model(file, meta), file, meta, read=lambda nets: ckpt.load_weights(file, nets)[0])


def _onnx(file: Path) -> ModelFile:
    meta = onnx_metadata(onnx_session(file, resolve_device("cpu")))
    if meta.get("format") != ckpt.FORMAT:
        raise UserError(f"{file} was not exported by 'unpaired export' (no {ckpt.FORMAT} metadata)")
    return ModelFile("onnx", _recorded_model(file, meta), file, meta)


def _recorded_model(file: Path, meta: dict[str, str]) -> str:
    """The model family a file's metadata names, once its recorded architecture has been checked
    (a file may be damaged or edited: refused here, naming the file, not later)."""
    model = meta.get("model")
    if not model:
        raise UserError(f"{file}: its metadata names no model ('model')")
    if model not in names():
        raise UserError(f"{file} holds a {model!r} model, which this version of unpaired does not know "
                        f"(it knows {', '.join(names())})")
    recorded = ckpt.read_arch(meta, file)
    try:
        family(model).arch(recorded)
    except UserError as exc:
        raise UserError(f"{file}: its recorded architecture cannot be used: {exc}") from None
    return model


def _official(path: Path, img_size: int | None) -> ModelFile | None:
    """The first family that reads ``path`` as one of its authors' files."""
    for candidate in families():
        if candidate.read_official is not None and candidate.official_paths(path):
            found = candidate.read_official(path, img_size)
            if found is not None:
                arch, states = found
                if img_size is None and getattr(arch, "light", False):
                    log.info(f"{path}: a light model does not record the size it was trained at; running at "
                             f"{arch.img_size} (give --img-size N for another)")
                return ModelFile("official", candidate.name, path, arch=arch, states=states,
                                 read=lambda nets: {n: states[n] for n in nets if n in states})
    return None


OUR_SUFFIXES = (".safetensors", ".onnx")


def looks_like_model(path: Path) -> bool:
    """Whether ``path`` could hold a model (our weights, an exported graph, a run or checkpoint
    folder, or a family's official file), judged without reading it: for listing folders."""
    path = Path(path)
    if path.is_file() and path.suffix in OUR_SUFFIXES:
        return True
    if path.is_dir() and ((path / ckpt.WEIGHTS).is_file() or RunDir(path).latest_checkpoint() is not None):
        return True
    return any(f.official_paths is not None and f.official_paths(path) for f in families())


def identify(path: Path | str, img_size: int | None = None) -> ModelFile:
    """What ``path`` holds (``img_size``: the training size of an official light model, which its
    file does not record)."""
    path = Path(path)
    if path.is_dir():
        found = _in_folder(path)
        if found is not None:
            return found
    elif path.suffix == ".safetensors":
        return _ours(path) if path.is_file() else _missing(path)
    elif path.suffix == ".onnx":
        return _onnx(path) if path.is_file() else _missing(path)
    found = _official(path, img_size)
    if found is not None:
        return found
    if not path.exists():
        _missing(path)
    if path.is_dir():
        raise UserError(f"{path} is neither a run folder with a complete checkpoint "
                        f"(checkpoints/<step>/{ckpt.WEIGHTS}), a checkpoint folder, nor an official checkpoint folder")
    raise UserError(f"{path} is not a checkpoint: expected a run folder, a .safetensors weights file, "
                    f"an exported .onnx or an official file ({_official_kinds()})")


def _missing(path: Path):
    raise UserError(f"checkpoint not found: {path}")


def _official_kinds() -> str:
    return ", ".join(f.official_summary for f in families() if f.official_summary) or "none"


def load_translator(path: Path | str | ModelFile, *, device: str = "auto", half: bool | None = None,
                    img_size: int | None = None, **options: Any) -> Translator:
    """The translator for whatever ``path`` holds (see the module docstring; a ``ModelFile`` from
    ``identify`` is not read again).

    ``device`` "auto" picks CUDA when available; ``half`` runs float16 weights (default on for
    CUDA, refused on the CPU); ``img_size`` runs a light model at another size. ``options`` are
    the family's own (U-GAT-IT-style: ``direction`` "A2B"/"B2A"; StarGAN v2: ``fan_weights``);
    None means not given. The translator's ``repr`` says what was loaded.
    """
    options = {name: value for name, value in options.items() if value is not None}
    found = path if isinstance(path, ModelFile) else identify(path, img_size)
    model = family(found.model)
    unknown = sorted(set(options) - set(model.load_options))
    if unknown:
        raise UserError(f"{found.file} holds a {model.name} model, which takes no {', '.join(unknown)} option "
                        f"(it takes: {', '.join(model.load_options) or 'none'})")
    if found.kind == "onnx":
        if half:
            raise UserError("an exported .onnx model runs in the precision it was exported in (float32)")
        return model.onnx_translator(found.file, found.meta, device=device, img_size=img_size, **options)
    arch = found.arch if found.kind == "official" else model.arch(ckpt.read_arch(found.meta, found.file))
    return model.translator(arch, found.read, found.file, device=device, half=half, img_size=img_size, **options)
