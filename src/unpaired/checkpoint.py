"""Checkpoints: weights as safetensors, training state beside them, written atomically.

A run's checkpoint is a folder ``RUN/checkpoints/<step:07d>/`` holding ``weights.safetensors``
(every network, keys ``<net>.<state_dict key>``; the model family and its architecture in the
metadata, so the file alone is enough for inference) and ``state.pt`` (optimisers, step, RNG and
data-stream positions; plain tensors and numbers, loadable with ``torch.load(weights_only=True)``).
The folder is written under a temporary name and renamed when complete, so a crash or a full disk
never leaves a half checkpoint where ``--resume`` would pick it up. Nothing here knows a model:
the family names its networks and architecture.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UserError
from .files import atomic_path

WEIGHTS = "weights.safetensors"
STATE = "state.pt"
FORMAT = "unpaired/1"

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


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(root: Path, step: int, nets: Mapping[str, nn.Module], model: str, arch: Any,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` under ``root`` as a complete folder, then drop all but the newest ``keep``."""
    root = Path(root)
    final = root / f"{step:07d}"
    tmp = root / f".tmp-{step:07d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_weights(tmp / WEIGHTS, states_of(nets), model, arch, step=step)
        with atomic_path(tmp / STATE) as path:
            torch.save(state, path)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(folder: Path) -> dict[str, Any]:
    return torch.load(Path(folder) / STATE, weights_only=True, map_location="cpu")


def remove_stale_temporaries(root: Path) -> None:
    """Delete folders left by a checkpoint write that was killed half-way."""
    root = Path(root)
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)
