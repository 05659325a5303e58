"""The official U-GAT-IT PyTorch checkpoints (``*_params_*.pt``: a dict of six state_dicts).

Our networks keep the official attribute names, so the state_dicts load as they are; only the
architecture has to be read off the tensor shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ...checkpoint import load_strict
from ...errors import UserError
from ...files import load_torch_file
from .networks import NET_NAMES, build_ugatit
from .options import UGATITArch

def is_official(params: object) -> bool:
    """Whether a loaded file holds the six official state_dicts (tensors only) of U-GAT-IT
    generators (an encoder called ``DownBlock``; photo2cartoon's files have the same six names)."""
    return (isinstance(params, dict) and set(NET_NAMES) <= set(params)
            and all(isinstance(params[name], dict) and all(isinstance(t, torch.Tensor) for t in params[name].values())
                    for name in NET_NAMES)
            and any(key.startswith("DownBlock.") for key in params["genA2B"]))


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


def check_states(build: Callable[[UGATITArch], dict[str, nn.Module]], arch: UGATITArch,
                 states: dict[str, dict[str, torch.Tensor]], source: Path) -> None:
    """Refuse states that do not load into the networks ``build(arch)`` makes (built on the meta
    device: nothing is allocated), naming the network and the first mismatch."""
    with torch.device("meta"):
        nets = build(arch)
    for name, state in states.items():
        load_strict(nets[name], state, source, name, assign=True)


def load_official(path: Path, img_size: int | None) -> tuple[UGATITArch, dict[str, dict[str, torch.Tensor]]] | None:
    """An official U-GAT-IT ``.pt`` as (arch, states in our layout); None when the file holds something else."""
    params = load_torch_file(path, "an official checkpoint")
    if not is_official(params):
        return None
    states = {name: dict(params[name]) for name in NET_NAMES}
    arch = infer_official_arch(states, img_size)
    check_states(build_ugatit, arch, states, path)
    return arch, states
