"""Checkpoints: weights as safetensors, training state beside them, official files imported.

A run's checkpoint is a folder ``RUN/checkpoints/<step:07d>/`` holding ``weights.safetensors``
(every network, keys ``<net>.<official key>``, architecture in the metadata, so the file alone
is enough for inference) and ``state.pt`` (optimisers, step, RNG and data-stream positions;
plain tensors and numbers, loadable with ``torch.load(weights_only=True)``). The folder is
written under a temporary name and renamed when complete, so a crash or a full disk never
leaves a half checkpoint where ``--resume`` would pick it up.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Collection
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UserError
from .files import atomic_path, load_torch_file
from .models.ugatit import NET_NAMES, UGATITArch

WEIGHTS = "weights.safetensors"
STATE = "state.pt"
FORMAT = "unpaired/1"


def _flatten(nets: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": t.detach().cpu().contiguous() for name, net in nets.items()
            for key, t in net.state_dict().items()}


def _split(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, sub = key.partition(".")
        states.setdefault(name, {})[sub] = tensor
    return states


def save_weights(path: Path, nets: dict[str, nn.Module], model: str, arch: Any, **extra: Any) -> None:
    """Write the networks' state_dicts and a description of them (model, architecture) atomically."""
    meta = {"format": FORMAT, "model": model, "arch": json.dumps(asdict(arch)), "nets": ",".join(nets)}
    meta.update({k: str(v) for k, v in extra.items()})
    with atomic_path(path) as tmp:
        save_file(_flatten(nets), str(tmp), metadata=meta)


def load_weights(path: Path, nets: Collection[str] | None = None
                 ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
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


def ugatit_arch(meta: dict[str, str]) -> UGATITArch:
    known = {f.name for f in fields(UGATITArch)}
    return UGATITArch(**{k: v for k, v in json.loads(meta["arch"]).items() if k in known})


# -- run checkpoints ------------------------------------------------------------------------

def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def list_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a folder counts only once both files exist)."""
    root = checkpoint_dir(run)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.name.isdigit() and (p / WEIGHTS).is_file() and (p / STATE).is_file()]
    return sorted(done, key=lambda p: int(p.name))


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def save_checkpoint(run: Path, step: int, nets: dict[str, nn.Module], model: str, arch: Any,
                    state: dict[str, Any], keep: int) -> Path:
    """Write checkpoint ``step`` as a complete folder, then drop all but the newest ``keep``."""
    root = checkpoint_dir(run)
    final = root / f"{step:07d}"
    tmp = root / f".tmp-{step:07d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        save_weights(tmp / WEIGHTS, nets, model, arch, step=step)
        with atomic_path(tmp / STATE) as path:
            torch.save(state, path)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(folder: Path) -> dict[str, Any]:
    return torch.load(Path(folder) / STATE, weights_only=True, map_location="cpu")


def remove_stale_temporaries(run: Path) -> None:
    """Delete folders left by a checkpoint write that was killed half-way."""
    root = checkpoint_dir(run)
    if root.is_dir():
        for p in root.glob(".tmp-*"):
            shutil.rmtree(p, ignore_errors=True)


# -- official U-GAT-IT checkpoints --------------------------------------------------------

def read_official(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Load an official ``*_params_*.pt`` (dict of six state_dicts) without unpickling code."""
    params = load_torch_file(path, "an official U-GAT-IT checkpoint")
    if not isinstance(params, dict) or not set(NET_NAMES) <= set(params):
        found = sorted(params)[:6] if isinstance(params, dict) else type(params).__name__
        raise UserError(f"{path} is not an official U-GAT-IT checkpoint: expected the keys "
                        f"{', '.join(NET_NAMES)}, found {found}")
    return {name: dict(params[name]) for name in NET_NAMES}


def infer_official_arch(states: dict[str, dict[str, torch.Tensor]], img_size: int | None) -> UGATITArch:
    """Architecture of an official checkpoint from its tensor shapes.

    ch from the first conv, n_res from the AdaILN blocks, light/full and (full) img_size from
    the MLP's input width, the discriminator depth from the global D's conv count. A light
    model does not record its img_size, so it comes from the caller (default 256).
    """
    gen, dis_g = states["genA2B"], states["disGA"]
    try:
        ch = gen["DownBlock.1.weight"].shape[0]
        img_ch = gen["DownBlock.1.weight"].shape[1]
        n_res = len({k.split(".")[0] for k in gen if k.startswith("UpBlock1_")})
        mlp_in = gen["FC.0.weight"].shape[1]
        n_global = sum(1 for k in dis_g if k.startswith("model.") and k.endswith(".weight_orig"))
    except KeyError as exc:
        raise UserError(f"not an official U-GAT-IT checkpoint: missing tensor {exc}") from None
    light, img_size = mlp_geometry(mlp_in, ch, img_size)
    return UGATITArch(light=light, img_size=img_size, img_ch=img_ch, ch=ch, n_res=n_res, n_dis=n_global)


def mlp_geometry(mlp_in: int, ch: int, img_size: int | None) -> tuple[bool, int]:
    """(light, img_size) of a U-GAT-IT-style generator from its γ/β MLP input width.

    Light pools to 4·ch inputs and does not record its size (``img_size`` or 256); full flattens
    (S/4)²·4·ch, which fixes S and must agree with a given ``img_size``.
    """
    if mlp_in == 4 * ch:
        return True, img_size or 256
    side = round((mlp_in / (4 * ch)) ** 0.5)
    if side * side * 4 * ch != mlp_in:
        raise UserError(f"cannot infer img_size from the MLP input width {mlp_in} (ch {ch})")
    if img_size is not None and img_size != side * 4:
        raise UserError(f"--img-size {img_size} does not match this full model, which was trained at {side * 4}")
    return False, side * 4
