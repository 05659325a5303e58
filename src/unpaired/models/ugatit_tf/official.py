"""The official TF checkpoints' variable names and layouts ↔ our networks' state_dict keys.

Names follow the scopes of taki0112/UGATIT (see its README and ``tests/parity_fixtures/tf``):
``generator_B`` is our ``genA2B`` (TF ``generate_a2b``), ``generator_A`` is ``genB2A``,
``discriminator_A`` / ``_B`` are ``disA`` / ``disB`` with branches ``local`` and ``global``.
Layouts: conv kernels HWIO ↔ OIHW, dense and CAM kernels [in, out] ↔ [out, in]; biases, norm
parameters, ρ and the spectral-norm ``u`` [1, out] are stored alike.

Two CAM layouts exist in the official history. The code of HEAD (since 2019-08-20) has one
``CAM_logit/{kernel,bias}``; the code before (when the selfie2anime release was announced,
2019-08-15) also has ``generator_*/CAM_logit/dense/{kernel,bias}``, its real logit layer, and
its discriminator scaled the CAM features by the kernel before spectral norm. A checkpoint with
the ``dense`` variables is read into ``UGATITTFArch(legacy_cam=True)``, which builds that older
head (``networks.CAM``); nothing is dropped. (The one day between "fix FC_with_w" and "fix fc",
2019-08-19, had the dense layer and already the normalised discriminator weighting; a
checkpoint of exactly that day differs from ``legacy_cam`` in its discriminators only.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from .bundle import TFCheckpoint
from .networks import GENERATOR_NAMES, NET_NAMES, build_ugatit_tf
from .options import DEFAULT_N_DIS, UGATITTFArch, deepest_n_dis

TF_SCOPES = {"genA2B": "generator_B", "genB2A": "generator_A", "disA": "discriminator_A", "disB": "discriminator_B"}
DEFAULT_LIGHT_IMG_SIZE = 256  # a light checkpoint does not record its image size; the official default
OPTIMIZER_SLOT = re.compile(r"(/Adam(_1)?$)|(^beta[12]_power(_\d+)?$)")
CONV = "conv2d/{}"  # tf.layers.conv2d (convs without spectral norm) adds this scope


def is_optimizer_slot(name: str) -> bool:
    """Adam's moment slots (``<var>/Adam``, ``<var>/Adam_1``) and its ``beta*_power*`` accumulators."""
    return bool(OPTIMIZER_SLOT.search(name))


# ----------------------------------------------------------------------------- names


def _pairs(tf_prefix: str, key_prefix: str, tf_leaves: Sequence[str], keys: Sequence[str]) -> Iterator[tuple[str, str]]:
    for tf_leaf, key in zip(tf_leaves, keys):
        yield f"{tf_prefix}/{tf_leaf}", f"{key_prefix}.{key}"


def _conv(tf_prefix: str, key_prefix: str) -> Iterator[tuple[str, str]]:
    """A conv without spectral norm (``tf.layers.conv2d`` inside ``ops.conv``)."""
    return _pairs(tf_prefix, key_prefix, (CONV.format("kernel"), CONV.format("bias")), ("weight", "bias"))


def _sn_conv(tf_prefix: str, key_prefix: str) -> Iterator[tuple[str, str]]:
    return _pairs(tf_prefix, key_prefix, ("kernel", "u", "bias"), ("weight", "u", "bias"))


def _generator_names(arch: UGATITTFArch) -> Iterator[tuple[str, str]]:
    """(TF name below the generator scope, our state_dict key), in TF creation order."""
    yield from _conv("conv", "conv")
    yield from _pairs("ins_norm", "ins_norm", ("beta", "gamma"), ("beta", "gamma"))
    for i in range(2):
        yield from _conv(f"conv_{i}", f"down.{i}.conv")
        yield from _pairs(f"ins_norm_{i}", f"down.{i}.norm", ("beta", "gamma"), ("beta", "gamma"))
    for i in range(arch.n_res):
        for j in (1, 2):
            yield from _conv(f"resblock_{i}/res{j}/conv_0", f"resblocks.{i}.conv{j}")
            yield from _pairs(f"resblock_{i}/res{j}/instance_norm", f"resblocks.{i}.norm{j}", ("beta", "gamma"),
                              ("beta", "gamma"))
    if arch.legacy_cam:
        yield from _pairs("CAM_logit", "cam", ("dense/kernel", "dense/bias", "kernel", "bias"),
                          ("weight", "bias", "feature_weight", "feature_bias"))
    else:
        yield from _pairs("CAM_logit", "cam", ("kernel", "bias"), ("weight", "bias"))
    yield from _conv("conv_1x1", "conv_1x1")
    for layer in ("linear_0", "linear_1", "gamma", "beta"):
        yield from _pairs(f"MLP/{layer}/dense", f"mlp.{layer}", ("kernel", "bias"), ("weight", "bias"))
    for i in range(arch.n_res):
        for j in (1, 2):
            yield from _conv(f"adaptive_resblock{i}/res{j}/conv_0", f"adaptive_resblocks.{i}.conv{j}")
            yield f"adaptive_resblock{i}/res{j}/instance_layer_norm/rho", f"adaptive_resblocks.{i}.norm{j}.rho"
    for i in range(2):
        yield from _conv(f"up_conv_{i}", f"up.{i}.conv")
        yield from _pairs(f"layer_ins_norm_{i}", f"up.{i}.norm", ("rho", "gamma", "beta"), ("rho", "gamma", "beta"))
    yield from _conv("G_logit", "logit")


def _discriminator_names(arch: UGATITTFArch) -> Iterator[tuple[str, str]]:
    for branch, strided in (("local", arch.local_strided), ("global", arch.global_strided)):
        prefix = f"branches.{branch}"
        for i in range(strided):
            yield from _sn_conv(f"{branch}/conv_{i}", f"{prefix}.convs.{i}")
        yield from _sn_conv(f"{branch}/conv_last", f"{prefix}.conv_last")
        yield from _sn_conv(f"{branch}/CAM_logit", f"{prefix}.cam")
        yield from _conv(f"{branch}/conv_1x1", f"{prefix}.conv_1x1")
        yield from _sn_conv(f"{branch}/D_logit", f"{prefix}.d_logit")


def variable_map(arch: UGATITTFArch, nets: Sequence[str] = NET_NAMES) -> dict[str, tuple[str, str]]:
    """TF variable name → (our network name, state_dict key), for the networks ``nets``."""
    mapping = {}
    for net in nets:
        names = _generator_names(arch) if net in GENERATOR_NAMES else _discriminator_names(arch)
        for tf_name, key in names:
            mapping[f"{TF_SCOPES[net]}/{tf_name}"] = (net, key)
    return mapping


# ----------------------------------------------------------------------------- layouts


def _kernel_axes(tf_name: str, rank: int) -> tuple[int, ...] | None:
    """Axis order that turns a TF tensor into ours (and back, for rank 2); None: same layout."""
    if not tf_name.endswith("kernel"):
        return None
    return (3, 2, 0, 1) if rank == 4 else (1, 0)


def to_torch_layout(tf_name: str, array: np.ndarray) -> torch.Tensor:
    axes = _kernel_axes(tf_name, array.ndim)
    tensor = torch.from_numpy(array)
    return tensor if axes is None else tensor.permute(axes).contiguous()


def to_tf_layout(tf_name: str, tensor: torch.Tensor) -> np.ndarray:
    axes = _kernel_axes(tf_name, tensor.dim())
    if axes is not None:
        tensor = tensor.permute((2, 3, 1, 0) if tensor.dim() == 4 else (1, 0))
    return tensor.detach().cpu().numpy().copy()  # a copy: later updates of the module must not show through


def tf_shape(tf_name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The TF shape of a tensor of our ``shape``."""
    axes = _kernel_axes(tf_name, len(shape))
    if axes is None:
        return tuple(shape)
    return tuple(shape[a] for a in ((2, 3, 1, 0) if len(shape) == 4 else (1, 0)))


def expected_tf_shapes(arch: UGATITTFArch, nets: Sequence[str] = NET_NAMES) -> dict[str, tuple[int, ...]]:
    """Every TF variable of ``nets`` and its shape, from networks built on the meta device."""
    with torch.device("meta"):
        built = build_ugatit_tf(arch)
    states = {net: built[net].state_dict() for net in nets}
    return {tf_name: tf_shape(tf_name, states[net][key].shape)
            for tf_name, (net, key) in variable_map(arch, nets).items()}


def state_dicts_from_tf(arch: UGATITTFArch, read: Callable[[str], np.ndarray],
                        nets: Sequence[str] = NET_NAMES) -> dict[str, dict[str, torch.Tensor]]:
    """Our state_dicts (one per net of ``nets``) from TF-laid-out arrays, ``read(tf_name)`` one at a
    time (so a checkpoint never sits in memory twice; pass ``dict.__getitem__`` for a dict)."""
    states: dict[str, dict[str, torch.Tensor]] = {net: {} for net in nets}
    for tf_name, (net, key) in variable_map(arch, nets).items():
        states[net][key] = to_torch_layout(tf_name, read(tf_name))
    return states


def tf_variables_from(arch: UGATITTFArch, states: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """TF-named, TF-laid-out arrays from our state_dicts (the networks present in ``states``)."""
    return {tf_name: to_tf_layout(tf_name, states[net][key])
            for tf_name, (net, key) in variable_map(arch, [n for n in NET_NAMES if n in states]).items()}


# ----------------------------------------------------------------------------- inferring the architecture


def _needed(shapes: Mapping[str, Sequence[int]], name: str, rank: int, source: str) -> tuple[int, ...]:
    if name not in shapes:
        raise UserError(f"{source} has no variable {name}: not a U-GAT-IT TF checkpoint of the official layout")
    if len(shapes[name]) != rank:
        raise UserError(f"{source}: {name} has shape {list(shapes[name])}, expected {rank} dimensions")
    return tuple(shapes[name])


def _count(shapes: Mapping[str, Sequence[int]], pattern: str) -> int:
    count = 0
    while pattern.format(count) in shapes:
        count += 1
    return count


def _image_size(light: bool, mlp_in: int, width: int, img_size: int | None, source: str) -> int:
    """Light models do not record it (``img_size`` or 256); full ones in the MLP's (S/4)² · 4ch inputs."""
    if light:
        return img_size or DEFAULT_LIGHT_IMG_SIZE
    side = math.isqrt(mlp_in // width)
    if side * side * width != mlp_in:
        raise UserError(f"{source}: MLP/linear_0 has {mlp_in} inputs, not (img_size/4)^2 * 4ch for ch {width // 4}")
    if img_size is not None and img_size != 4 * side:
        raise UserError(f"{source} is a full model for img_size {4 * side}, not {img_size}")
    return 4 * side


def infer_arch(shapes: Mapping[str, Sequence[int]], img_size: int | None = None, smoothing: bool = True,
               source: str = "checkpoint") -> UGATITTFArch:
    """The architecture of a checkpoint from its variables' shapes (optimiser slots excluded).

    light/full, ch, img_ch, n_res, n_dis and the CAM layout are read off the shapes; the image
    size too for full models (``img_size`` cross-checks it) and ``img_size`` (default 256) for
    light ones; ``smoothing`` is not recorded (the official default is on). Generator-only
    checkpoints (the official test graph) get n_dis 6, or the deepest that fits ``img_size``.
    Then every name and shape must be exactly the official one (``check_variables``).
    """
    g = TF_SCOPES["genA2B"]
    _, _, img_ch, ch = _needed(shapes, f"{g}/conv/conv2d/kernel", 4, source)
    mlp_in, mlp_width = _needed(shapes, f"{g}/MLP/linear_0/dense/kernel", 2, source)
    if mlp_width != 4 * ch:
        raise UserError(f"{source}: the MLP is {mlp_width} wide, not 4 * ch = {4 * ch} (the TF code's ch * n_res "
                        f"only builds for n_res 4)")
    light = mlp_in == 4 * ch
    size = _image_size(light, mlp_in, 4 * ch, img_size, source)
    has_discriminators = any(name.startswith("discriminator_") for name in shapes)
    n_dis = (_count(shapes, f"{TF_SCOPES['disA']}/global/conv_{{}}/kernel") + 1 if has_discriminators
             else min(DEFAULT_N_DIS, deepest_n_dis(size) or DEFAULT_N_DIS))
    arch = UGATITTFArch(light=light, img_size=size, img_ch=img_ch, ch=ch,
                        n_res=_count(shapes, f"{g}/resblock_{{}}/res1/conv_0/conv2d/kernel"), n_dis=n_dis,
                        smoothing=smoothing, legacy_cam=f"{g}/CAM_logit/dense/kernel" in shapes)
    check_variables(arch, shapes, GENERATOR_NAMES if not has_discriminators else NET_NAMES, source)
    return arch


def _describe(arch: UGATITTFArch) -> str:
    kind = "light" if arch.light else "full"
    cam = ", pre-2019-08-20 CAM" if arch.legacy_cam else ""
    return f"{kind} model, img_size {arch.img_size}, ch {arch.ch}, n_res {arch.n_res}, n_dis {arch.n_dis}{cam}"


def check_variables(arch: UGATITTFArch, shapes: Mapping[str, Sequence[int]], nets: Sequence[str],
                    source: str = "checkpoint") -> None:
    """Refuse, in one line, any unexpected, missing or mis-shaped variable for ``arch``."""
    expected = expected_tf_shapes(arch, nets)
    unexpected = [name for name in shapes if name not in expected]
    missing = [name for name in expected if name not in shapes]
    for names, what in ((unexpected, "unexpected variable"), (missing, "missing variable")):
        if names:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            raise UserError(f"{source}: {what} {names[0]}{more} for a U-GAT-IT TF checkpoint ({_describe(arch)})")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise UserError(f"{source}: {name} has shape {list(shapes[name])}, expected {list(shape)} "
                            f"({_describe(arch)})")


# ----------------------------------------------------------------------------- reading


def read_tf_checkpoint(path: Path | str, img_size: int | None = None,
                       smoothing: bool = True) -> tuple[UGATITTFArch, dict[str, dict[str, torch.Tensor]]]:
    """Read an official TF checkpoint (folder, prefix or ``.index``) into our networks' state_dicts.

    Works for training checkpoints (four networks; Adam slots are skipped, never read) and for
    generator-only ones (``genA2B``, ``genB2A``). Returns ``(arch, {net: state_dict})``, ready for
    ``build_ugatit_tf(arch)[net].load_state_dict(state, strict=True)``.
    """
    checkpoint = TFCheckpoint(path)
    source = str(checkpoint.index_path)
    shapes = {name: shape for name, shape in checkpoint.shapes().items() if not is_optimizer_slot(name)}
    arch = infer_arch(shapes, img_size, smoothing, source)
    nets = NET_NAMES if any(name.startswith("discriminator_") for name in shapes) else GENERATOR_NAMES
    return arch, state_dicts_from_tf(arch, checkpoint.read, nets)
