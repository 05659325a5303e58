"""The photo2cartoon authors' checkpoints (``photo2cartoon_weights.pt``, ``*_params_*.pt``) in our layout."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ...errors import UserError
from ...files import load_torch_file
from ..ugatit.networks import NET_NAMES
from ..ugatit.official import check_states, is_state_dict, mlp_geometry
from ..ugatit.options import UGATITArch
from .networks import build_photo2cartoon

_UNUSED_SHORTCUT = re.compile(r"(^|\.)ConvBlock4\.2\.weight$")


def official_states(params: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """The authors' per-network state_dicts in our layout.

    Two differences are undone: a ``module.`` prefix (their periodic ``*_params_latest.pt`` is
    saved from DataParallel wrappers on multi-GPU runs) and the never-used square shortcut
    projections of the hourglass units (a ``ConvBlock4`` whose conv maps C → C channels).
    """
    states = {}
    for name, state in params.items():
        out = {}
        for key, tensor in state.items():
            key = key.removeprefix("module.")
            if _UNUSED_SHORTCUT.search(key) and tensor.shape[0] == tensor.shape[1]:
                continue
            out[key] = tensor
        states[name] = out
    return states


def is_photo2cartoon(params: object) -> bool:
    """Whether a loaded file holds photo2cartoon state_dicts: a dict with at least one generator
    whose stem is photo2cartoon's (``ConvBlock1``), tensors only."""
    if not isinstance(params, dict) or not {"genA2B", "genB2A"} & set(params):
        return False
    if not all(is_state_dict(params[name]) for name in NET_NAMES if name in params):
        return False
    generator = params.get("genA2B", params.get("genB2A"))
    return any(key.removeprefix("module.").startswith("ConvBlock1.") for key in generator)


def load_official(path: Path, img_size: int | None) -> tuple[UGATITArch, dict[str, dict[str, torch.Tensor]]] | None:
    """The authors' checkpoint as (arch, the networks it holds in our layout); None when the file is
    not a photo2cartoon checkpoint. Read without unpickling code."""
    params = load_torch_file(path, "a photo2cartoon checkpoint")
    if not is_photo2cartoon(params):
        return None
    states = official_states({name: dict(params[name]) for name in NET_NAMES if name in params})
    arch = infer_photo2cartoon_arch(states, img_size)
    check_states(build_photo2cartoon, arch, states, path)
    return arch, states


def infer_photo2cartoon_arch(states: dict[str, dict[str, torch.Tensor]], img_size: int | None) -> UGATITArch:
    """Architecture of a photo2cartoon checkpoint from its tensor shapes (as ``infer_official_arch``).

    ch and image channels from the stem conv, n_res from the encoder blocks, light/full (and a full
    model's img_size) from the style MLP's input width, n_dis from the global D when present. A
    light model does not record its img_size; it comes from the caller (default 256).
    """
    gen = states.get("genA2B") or states["genB2A"]
    try:
        ch, img_ch = gen["ConvBlock1.1.weight"].shape[:2]
        n_res = len({k.split(".")[0] for k in gen if k.startswith("EncodeBlock")})
        mlp_in = gen["FC.0.weight"].shape[1]
    except KeyError as exc:
        raise UserError(f"not a photo2cartoon checkpoint: missing tensor {exc}") from None
    n_dis = 6
    if "disGA" in states:
        n_dis = sum(1 for k in states["disGA"] if k.startswith("model.") and k.endswith(".weight_orig"))
    light, img_size = mlp_geometry(mlp_in, ch, img_size)
    return UGATITArch(light=light, img_size=img_size, img_ch=img_ch, ch=ch, n_res=n_res, n_dis=n_dis)
