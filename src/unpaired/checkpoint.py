"""Checkpoints: weights as safetensors, training state beside them, written atomically.

A run's checkpoint is a folder ``RUN/checkpoints/<step:07d>/`` holding ``weights.safetensors``
(every network, keys ``<net>.<state_dict key>``; the model family and its architecture in the
metadata, so the file alone is enough for inference) and ``state.pt`` (optimisers, step, RNG and
data-stream positions; plain tensors and numbers, loadable with ``torch.load(weights_only=True)``).
The folder is written under a temporary name and renamed when complete, so a crash or a full disk
never leaves a half checkpoint where ``--resume`` would pick it up; old checkpoints are renamed
away before they are deleted, so a crash never leaves half of one either. Readers take the newest
checkpoint that reads back (``newest``): a damaged one is named and skipped, not fatal. Nothing
here knows a model: the family names its networks and architecture.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UserError
from .files import atomic_file, atomic_path, load_torch_file, writing

log = logging.getLogger("unpaired")

WEIGHTS = "weights.safetensors"
STATE = "state.pt"
FORMAT = "unpaired/1"
STATE_KEYS = {"step": int, "iters": int, "trainer": dict, "rng": dict}  # what resuming reads from state.pt
TEMPORARY = ".tmp-"  # a checkpoint being written
TRASH = ".trash-"  # a checkpoint being deleted

States = dict[str, dict[str, torch.Tensor]]  # network name -> state_dict


def _flatten(states: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": t.detach().cpu().contiguous() for name, state in states.items()
            for key, t in state.items()}


def _split(tensors: dict[str, torch.Tensor]) -> States:
    states: States = {}
    for key, tensor in tensors.items():
        name, _, sub = key.partition(".")
        states.setdefault(name, {})[sub] = tensor
    return states


def states_of(nets: Mapping[str, nn.Module]) -> States:
    return {name: net.state_dict() for name, net in nets.items()}


def metadata(model: str, arch: Any, **extra: Any) -> dict[str, str]:
    """What a weights file (or an exported graph) records to be loaded back: format, model, architecture."""
    return {"format": FORMAT, "model": model, "arch": json.dumps(asdict(arch)), **{k: str(v) for k, v in extra.items()}}


def save_weights(path: Path, states: Mapping[str, Mapping[str, torch.Tensor]], model: str, arch: Any,
                 **extra: Any) -> None:
    """Write per-network state_dicts and a description of them (model, architecture) atomically."""
    meta = {**metadata(model, arch, **extra), "nets": ",".join(states)}
    with atomic_path(path) as tmp:
        save_file(_flatten(states), str(tmp), metadata=meta)


def load_weights(path: Path, nets: Collection[str] | None = None) -> tuple[States, dict[str, str]]:
    """Read one of our weight files: per-network state_dicts and the metadata.

    ``nets`` limits reading to those networks (inference needs one generator, not all six).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()
                       if nets is None or key.partition(".")[0] in nets}
    except (SafetensorError, ValueError, OSError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not an unpaired checkpoint (no '{FORMAT}' metadata)")
    return _split(tensors), meta


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: Path | str, what: str,
                assign: bool = False) -> nn.Module:
    """``module.load_state_dict(state, strict=True)``, or a one-line UserError saying that ``source``'s
    ``what`` does not fit, with the first missing, unexpected or misshapen tensors torch lists.

    ``assign`` takes the tensors as they are (for modules built on the meta device).
    """
    try:
        module.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:  # torch lists the mismatches after a header line
        detail = " ".join(str(exc).split("\n", 1)[-1].split())
        detail = detail if len(detail) <= 200 else detail[:200] + "..."
        raise UserError(f"{source}: {what} does not fit its architecture: {detail}") from None
    return module


def read_arch(meta: Mapping[str, str], source: Path) -> dict[str, Any]:
    """The architecture a weights file or graph records, as a mapping (the family builds its class)."""
    try:
        arch = json.loads(meta["arch"])
    except (KeyError, ValueError):
        raise UserError(f"{source}: its metadata has no readable architecture ('arch')") from None
    if not isinstance(arch, dict):
        raise UserError(f"{source}: its recorded architecture is not a mapping")
    return arch


# -- a run's checkpoints folder ---------------------------------------------------------------


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (a folder counts only once both files exist)."""
    root = Path(root)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.isdigit() and (p / WEIGHTS).is_file() and (p / STATE).is_file()]
    return sorted(done, key=lambda p: int(p.name))


Read = TypeVar("Read")


def newest(root: Path, read: Callable[[Path], Read]) -> tuple[Path, Read] | None:
    """The newest complete checkpoint under ``root`` that ``read`` accepts, and what it read.

    A damaged checkpoint (``read`` raises UserError: a truncated, foreign or unreadable file)
    is skipped with a warning that names it, so one bad folder never blocks a run while an older
    one is good. None when there is no complete checkpoint; a UserError when all are damaged.
    """
    damaged = []
    for folder in reversed(list_checkpoints(root)):
        try:
            found = folder, read(folder)
        except UserError as exc:
            damaged.append(f"{folder.name} ({exc})")
            continue
        if damaged:
            log.warning(f"skipped damaged checkpoint(s) in {root}: {'; '.join(damaged)}; using {folder} "
                        f"(remove the damaged folder(s) to silence this)")
        return found
    if damaged:
        raise UserError(f"every checkpoint in {root} is damaged: {'; '.join(damaged)}")
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, unread (inference takes the newest that reads back: see ``newest``)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(root: Path, step: int, nets: Mapping[str, nn.Module], model: str, arch: Any,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` under ``root`` as a complete folder, then drop all but the newest ``keep``.

    A failure of the machine (full disk) is a WriteError and leaves every earlier checkpoint intact.
    """
    root = Path(root)
    final = root / f"{step:07d}"
    tmp = root / f"{TEMPORARY}{step:07d}-{uuid.uuid4().hex[:8]}"
    with writing(final):
        tmp.mkdir(parents=True)
        try:
            save_weights(tmp / WEIGHTS, states_of(nets), model, arch, step=step)
            with atomic_file(tmp / STATE) as fh:
                torch.save(state, fh)
            if final.exists():
                discard(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # Checkpoints after this step are left alone: they are damaged ones a resume skipped, which
        # this run replaces as it reaches their steps; counting them could drop the good ones.
        for old in [folder for folder in list_checkpoints(root) if int(folder.name) <= step][:-keep]:
            discard(old)
    return final


def discard(folder: Path) -> None:
    """Delete a checkpoint folder without ever leaving half of it behind under its own name.

    It is renamed out of the checkpoints first (atomic), then deleted: a process killed while
    deleting leaves a ``.trash-*`` folder, which ``remove_leftovers`` clears at the next start.
    """
    trash = folder.with_name(f"{TRASH}{folder.name}-{uuid.uuid4().hex[:8]}")
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def load_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's training state, checked for what resuming needs; a UserError naming the
    file when it is truncated, damaged or not ours."""
    path = Path(folder) / STATE
    state = load_torch_file(path, "a checkpoint's training state")
    if not (isinstance(state, dict) and all(isinstance(state.get(key), kind) for key, kind in STATE_KEYS.items())
            and _is_rng_state(state["rng"].get("torch"))):
        raise UserError(f"{path} is not the training state of an unpaired checkpoint "
                        f"(it must hold {', '.join(STATE_KEYS)})")
    named = int(Path(folder).name) if Path(folder).name.isdigit() else state["step"]
    if state["step"] != named or state["iters"] < 1:
        raise UserError(f"{path} records step {state['step']} of {state['iters']}, not the step of its folder "
                        f"{Path(folder).name}: it was edited or moved; remove that checkpoint folder")
    return state


def _is_rng_state(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype == torch.uint8
            and value.shape == torch.get_rng_state().shape)


def remove_leftovers(root: Path) -> None:
    """Delete the folders a killed process left: checkpoints half written, or half deleted."""
    root = Path(root)
    if root.is_dir():
        for p in [*root.glob(f"{TEMPORARY}*"), *root.glob(f"{TRASH}*")]:
            shutil.rmtree(p, ignore_errors=True)
