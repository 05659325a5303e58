"""Training speed at the same math: spectral norm on outputs, mixed precision, fused Adam, compiling.

These options choose how a run computes, never what (losses, optimisers and schedule are the
official ones in every mode). Unset options are filled per device by ``resolve_speed``:

==================  ==============================================  =============  ============
option              what                                            unset on GPU   unset on CPU
==================  ==============================================  =============  ============
``sn_outputs``      spectral norm divides the convs' outputs by σ,  on             on
                    not their (large) weights: equal math
``precision``       fp32, or bf16 / fp16 autocast (fp16 with a      bf16 (fp16     fp32
                    GradScaler)                                     without bf16)
``fused_adam``      Adam's single fused kernel (not bit-equal to    on             on
                    the per-tensor loop)
``benchmark_flag``  cuDNN autotuning                                on             (no cuDNN)
``compile``         ``torch.compile`` mode for every network        off            off
``channels_last``   NHWC memory layout for the networks             off            off
==================  ==============================================  =============  ============

``faithful`` (``--faithful``) instead computes the official way (fp32, eager, torch's spectral
norm, the default Adam loop, no autotuning): the mode the parity tests check bit for bit.

The CPU column follows ``benchmarks/train_step.py`` (the README's "Training speed" has the
numbers). The GPU column is the usual choice for conv nets and stays so until a GPU measurement
says otherwise; compiling and channels_last are switched on by hand. TF32 matmuls are allowed
only when the run chose a reduced precision. A family whose fast path is not measured yet
(StarGAN v2) resolves unset options with ``official_settings``.
"""

from __future__ import annotations

import dataclasses
import functools
import types

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.spectral_norm import SpectralNorm

from collections.abc import Callable, Mapping

from ..errors import UserError
from . import memory

FAITHFUL = {"precision": "fp32", "compile": "off", "channels_last": False, "fused_adam": False, "sn_outputs": False}
SPEED_OPTIONS = ("faithful", *FAITHFUL, "benchmark_flag", "memory")  # what a run logs it computed with


def fast_settings(device: torch.device) -> dict:
    """What unset speed options mean on ``device`` when not ``faithful`` (see the module docstring)."""
    if device.type == "cuda":
        return {"precision": "bf16" if torch.cuda.is_bf16_supported() else "fp16", "compile": "off",
                "channels_last": False, "fused_adam": True, "sn_outputs": True}
    return {"precision": "fp32", "compile": "off", "channels_last": False, "fused_adam": True, "sn_outputs": True}


def _is_auto(value) -> bool:
    return value is None or value == "auto"


def _flag(name: str, value) -> str:
    """How ``name=value`` is written on the command line (``--channels-last``, ``--precision bf16``)."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def resolve_speed(opts, device: torch.device, fast: Callable[[torch.device], dict] = fast_settings,
                  unsupported: Mapping[str, str] | None = None):
    """``opts`` with its unset (``auto``) speed options filled in for ``device`` (a new object).

    ``fast`` says what unset options mean when not ``faithful`` (a family whose fast path is not
    measured yet passes ``official_settings``); ``unsupported`` maps options the family does not
    implement to the reason, refused when given a value other than the official one.
    ``faithful`` fills them with the official way of computing and refuses explicit options that
    contradict it. cuDNN autotuning (``benchmark_flag``) defaults to on for fast GPU runs; it
    picks kernels by timing, so it is off for ``faithful`` and ``deterministic`` runs unless asked
    for. The run logs the result; its config.yaml keeps the options as given, so that a resume on
    another device chooses again.
    """
    given = {name: getattr(opts, name) for name in FAITHFUL if not _is_auto(getattr(opts, name))}
    for name, why in (unsupported or {}).items():
        if name in given and given[name] != FAITHFUL[name]:
            raise UserError(f"{_flag(name, given[name])} is not supported for --model {opts.model}: {why}")
    chosen = dict(FAITHFUL if opts.faithful else fast(device))
    if opts.faithful:
        clashes = [_flag(name, value) for name, value in given.items() if value != FAITHFUL[name]]
        if clashes:
            raise UserError(f"--faithful computes as the official code (fp32, eager, default kernels); "
                            f"it cannot be combined with {', '.join(clashes)}")
    chosen["benchmark_flag"] = device.type == "cuda" and not (opts.faithful or opts.deterministic)
    return dataclasses.replace(opts, **{name: value for name, value in chosen.items()
                                        if _is_auto(getattr(opts, name))})


def official_settings(device: torch.device) -> dict:
    """Unset speed options computing the official way on every device (a family not yet measured)."""
    return dict(FAITHFUL)


def configure_kernels(opts, device: torch.device) -> None:
    """Process-wide kernel choices for ``device``: deterministic algorithms, cuDNN autotuning, TF32 matmuls."""
    if opts.deterministic:
        torch.use_deterministic_algorithms(True)
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = bool(opts.benchmark_flag)
    torch.set_float32_matmul_precision("highest" if opts.precision == "fp32" else "high")


def _sigma(layer: nn.Conv2d, norm: SpectralNorm) -> torch.Tensor:
    """σ of ``layer``'s weight exactly as ``SpectralNorm.compute_weight`` gets it (same ops, same u, v).

    In training mode one power iteration advances the u, v buffers in place; σ uses clones of
    them (as torch does) so that the next call's update cannot invalidate this call's backward.
    """
    weight = getattr(layer, norm.name + "_orig")
    u, v = getattr(layer, norm.name + "_u"), getattr(layer, norm.name + "_v")
    matrix = norm.reshape_weight_to_matrix(weight)
    if layer.training:
        with torch.no_grad():
            for _ in range(norm.n_power_iterations):
                v = F.normalize(torch.mv(matrix.t(), u), dim=0, eps=norm.eps, out=v)
                u = F.normalize(torch.mv(matrix, v), dim=0, eps=norm.eps, out=u)
            u, v = u.clone(memory_format=torch.contiguous_format), v.clone(memory_format=torch.contiguous_format)
    return torch.dot(u, torch.mv(matrix, v))


def _conv_over_sigma(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x, W) / σ + b: what conv(x, W / σ) + b computes, without a pass over W for W / σ."""
    out = layer._conv_forward(x, layer.weight_orig, None) / layer.sn_sigma
    return out if layer.bias is None else out + layer.bias.view(1, -1, 1, 1)


def _run_spectral_norms(layers: list[tuple[nn.Module, SpectralNorm, bool]], module: nn.Module, inputs) -> None:
    # σ in fp32 even under autocast, where a bf16 σ would scale every weight by its ~0.4 % rounding
    with torch.autocast(inputs[0].device.type, enabled=False):
        for layer, norm, divides_output in layers:
            if divides_output:
                layer.sn_sigma = _sigma(layer, norm)
            else:
                norm(layer, inputs)  # torch's own: sets layer.weight = W / σ


def rework_spectral_norm(net: nn.Module, divide_outputs: bool) -> int:
    """Run ``net``'s spectral-norm power iterations in one eager pre-hook of ``net``, and optionally
    divide the outputs of its spectrally normalised convs by σ instead of their weights.

    Hoisting is what compiling needs: compiled (inductor) code that updates the u, v buffers in
    place saves the mutated buffer for the backward pass, so the next forward of the same
    discriminator (called on real, then fake images before one backward) fails autograd's
    in-place check. Run eagerly before the compiled forward, every power iteration is exactly
    the eager one (same u, v and W / σ, bit for bit).

    ``divide_outputs`` (``--sn-outputs``): conv(x, W / σ) = conv(x, W) / σ. U-GAT-IT's global
    discriminators hold most of the model's weights (113 M of them at ch 64) but see 2-8 px maps
    in their deep layers, so dividing the small outputs instead of the large weights saves
    several passes over those weights per call and backward: half the time of a discriminator
    forward + backward on the CPU at 128 px. Equal math, rounded differently (not bit-identical).
    The small spectrally normalised linear layers of the CAM head keep the weight division: the
    discriminator also reads their normalised weight (``--fix-d-cam-weight``).
    Each reworked layer is marked with the attribute the hook sets on it per call (σ, or W / σ),
    which lean memory's recomputation reinstates (``training/memory.py``).
    Returns the number of layers reworked.
    """
    layers = []
    for layer in net.modules():
        for key, hook in list(layer._forward_pre_hooks.items()):
            if isinstance(hook, SpectralNorm):
                del layer._forward_pre_hooks[key]
                divides_output = divide_outputs and isinstance(layer, nn.Conv2d)
                layers.append((layer, hook, divides_output))
                setattr(layer, memory.PER_CALL, ("sn_sigma",) if divides_output else (hook.name,))
                if divides_output:
                    delattr(layer, hook.name)  # W / σ is never formed; a stale copy must not be read
                    layer.forward = types.MethodType(_conv_over_sigma, layer)
    if layers:
        hook = torch.compiler.disable(functools.partial(_run_spectral_norms, layers))
        net.register_forward_pre_hook(hook, prepend=True)
    return len(layers)


def accelerate(nets: dict[str, nn.Module], opts, device: torch.device) -> dict[str, nn.Module]:
    """Apply ``opts``' resolved speed options and its memory mode to ``nets`` in place and return them.

    The modules stay the same objects (``nn.Module.compile`` compiles a module's call in place), so
    state_dict keys, checkpoints, DDP wrapping and the trainer's ``raw`` networks are unchanged.
    ``--memory lean`` hoists spectral norm as ``--sn-outputs`` and compiling do (whatever
    ``sn_outputs`` says: the power iterations must run outside the recomputed blocks) and
    checkpoints each network's ``memory_blocks()``, and its large linear layers sum their weight
    gradients in place (``memory.accumulate_large_linears``).
    Call it after moving the networks to ``device`` and before building the trainer and DDP.
    """
    if any(_is_auto(getattr(opts, name)) for name in (*FAITHFUL, "benchmark_flag")):
        raise ValueError("accelerate() needs resolved speed options: call resolve_speed(opts, device) first")
    configure_kernels(opts, device)
    for net in nets.values():
        if opts.channels_last:
            net.to(memory_format=torch.channels_last)
        if opts.sn_outputs or opts.compile != "off" or opts.memory == "lean":
            rework_spectral_norm(net, divide_outputs=opts.sn_outputs)
        if opts.memory == "lean":
            memory.checkpoint_network(net)
            memory.accumulate_large_linears(net)
        if opts.compile != "off":
            net.compile(mode=None if opts.compile == "default" else opts.compile)
    return nets
