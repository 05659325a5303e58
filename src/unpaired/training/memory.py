"""Memory-lean training (``--memory lean``): the same numbers in a fraction of the memory.

``normal`` keeps, from every forward pass, every tensor its backward pass will read, which is
most of a training step's memory: U-GAT-IT's generator step holds six generator graphs at once
(translation, cycle and identity of both directions), each with some ten feature maps per
convolution (padding, normalisation statistics and intermediates, activations). ``lean``:

* checkpoints activations: each network names its blocks (``memory_blocks()``); a block keeps
  its inputs and the outputs of its costly convolutions, and when the backward pass reaches it,
  it runs its forward again to get the rest: normalisations, activations, padding, up-sampling
  and cheap convolutions, which cost memory bandwidth rather than arithmetic (selective
  checkpointing, ``torch.utils.checkpoint`` non-reentrant). The autograd graph is the normal
  mode's, only its saved tensors come back by recomputing, so gradients are summed in the same
  order and the numbers are the same, bit for bit where the kernels are deterministic
  (``tests/test_memory.py``);
* gives large linear layers their weight gradient in the weight's own layout
  (``accumulate_large_linears``), so that autograd sums the gradients of a layer used several
  times in one step in place;
* drops each optimiser's gradients as soon as it has stepped (the trainers call
  ``release_gradients``), so the D step's gradients are not held through the G step, nor G's
  through the next D step, and hands the heap memory freed so far back to the system.

A network without ``memory_blocks()`` trains as in the normal mode; a new family opts in by
giving its networks that method (``checkpoint_blocks`` says what a block may do). Keeping
convolution outputs works for blocks that are differentiated once per forward; a network whose
forward is differentiated twice (StarGAN v2's discriminator: the R1 penalty back-propagates
through the gradient of its real-image call) sets ``memory_keeps_convolutions = False`` and has
its blocks recomputed whole, convolutions included, once per backward pass that reaches them.

State a network's pre-hook sets per call. Recomputing must not repeat work that changes state,
and must see the state of its own call. Spectral norm is both: each train-mode call advances
the u, v buffers in place (one power iteration), and a discriminator runs on real, then fake
images before one backward pass, so when the first call is recomputed its layers hold the σ of
the second. ``lean`` therefore runs the power iterations in one pre-hook per network
(``speed.rework_spectral_norm``), which a network's own call runs and a block's recomputation
does not: the boundary sits inside the network, below that hook. The hook marks each layer it
serves with the attribute it sets (``PER_CALL``: σ with ``--sn-outputs``, W / σ with torch's
spectral norm); a block captures those values when it runs and puts them back while it is
recomputed, so σ is computed once per forward and reused, and u, v advance exactly as in the
normal mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

PER_CALL = "per_call_state"  # on a layer: names of the attributes a network pre-hook sets on every call
# A convolution's output is kept when recomputing it would cost at least this many multiply-adds
# per value (input channels per group × kernel area); cheaper ones (an RGB stem: 3 × 7 × 7, the
# hourglasses' narrow units) are recomputed like the norms.
KEEP_CONVOLUTIONS_FROM = 1024
# Linear layers with at least this many weights (64 MiB in fp32) get ``accumulate_large_linears``:
# the full U-GAT-IT's γ/β MLP reads the whole 64 × 64 × 256 map at 256 px (268 M weights).
LARGE_LINEAR = 1 << 24

State = Sequence[tuple[nn.Module, str]]


def memory_blocks(net: nn.Module) -> list[nn.Module]:
    """The blocks ``net`` recomputes in lean mode (none for a network that names none)."""
    named = getattr(net, "memory_blocks", None)
    return list(named()) if named is not None else []


def per_call_state(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """(layer, attribute) of every per-call value inside ``block`` that a pre-hook outside it sets."""
    return [(layer, name) for layer in block.modules() for name in getattr(layer, PER_CALL, ())]


def checkpoint_network(net: nn.Module) -> int:
    """Checkpoint ``net``'s ``memory_blocks()`` as the network asks (see the module docstring)."""
    return checkpoint_blocks(memory_blocks(net), keep_convolutions=getattr(net, "memory_keeps_convolutions", True))


def accumulate_large_linears(net: nn.Module) -> int:
    """Compute the weight gradient of ``net``'s large linear layers as ``gradᵀ · x`` [out, in].

    ``F.linear`` differentiates its weight through a transpose, so each use's weight gradient
    reaches autograd as a transposed view, which autograd cannot add to in place: a weight used
    k ≥ 2 times in one backward pass peaks at three copies of it (the sum so far, the new use's
    gradient, their sum), the full U-GAT-IT generator's 1 GiB MLP weight at 3 GiB. Given in the
    weight's layout, the uses are summed in place (two copies), in the same order. Each value is
    the same product (bit for bit at batch 1, where every entry is one product; within float
    rounding for larger batches, which the GEMM may sum in another order). Under autocast a
    layer runs as before (its backward would need the casts). Returns the number of layers.
    """
    count = 0
    for layer in net.modules():
        if isinstance(layer, nn.Linear) and layer.weight.numel() >= LARGE_LINEAR:
            layer.forward = functools.partial(_linear_in_weight_layout, layer)
            count += 1
    return count


def _linear_in_weight_layout(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type) or x.dim() != 2:
        return nn.functional.linear(x, layer.weight, layer.bias)
    return _WeightLayoutLinear.apply(x, layer.weight, layer.bias)


class _WeightLayoutLinear(torch.autograd.Function):
    """``F.linear`` for a [B, in] input whose weight gradient is [out, in] (not a transposed view)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad.mm(weight) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t().mm(x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def checkpoint_blocks(blocks: Iterable[nn.Module], keep_convolutions: bool = True) -> int:
    """Make each block keep only its inputs (and its convolutions' outputs, with
    ``keep_convolutions``), and recompute the rest in the backward pass.

    A block's forward must be a function of its arguments, its parameters and its ``PER_CALL``
    state alone: no randomness (the RNG state is replayed, but nothing here draws), no state of
    its own that changes per call, no in-place change of its inputs or of a convolution's output
    (both are read again when it is recomputed; torch refuses the second). Activation modules
    inside a block therefore run out of place: in place they save nothing here (what they would
    overwrite is recomputed anyway), and their values and gradients are the same either way.
    Blocks are changed in place (their ``forward``), so names, state_dict keys and checkpoints
    stay as they are; without autograd (evaluation, sample grids) a block runs as before.
    Returns the number of blocks.
    """
    count = 0
    for block in blocks:
        for layer in block.modules():
            if getattr(layer, "inplace", False):
                layer.inplace = False
        contexts = _keep_convolutions if keep_convolutions else _recompute_all
        block.forward = functools.partial(_checkpointed, block.forward, per_call_state(block), contexts)
        count += 1
    return count


def _keep_costly_convolutions(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    if op is torch.ops.aten.convolution.default and args[1][0].numel() >= KEEP_CONVOLUTIONS_FROM:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _keep_convolutions():
    return create_selective_checkpoint_contexts(_keep_costly_convolutions)


def _recompute_all():
    return contextlib.nullcontext(), contextlib.nullcontext()


def _checkpointed(forward, state: State, contexts, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    values = [getattr(layer, name) for layer, name in state]
    return checkpoint(_with_state, forward, state, values, *args, use_reentrant=False, context_fn=contexts,
                      **kwargs)


def _with_state(forward, state: State, values: list[torch.Tensor], *args, **kwargs):
    """``forward`` with the per-call state of the call being run or recomputed."""
    with _reinstated(state, values):
        return forward(*args, **kwargs)


@contextlib.contextmanager
def _reinstated(state: State, values: list[torch.Tensor]) -> Iterator[None]:
    latest = [getattr(layer, name) for layer, name in state]
    for (layer, name), value in zip(state, values):
        setattr(layer, name, value)
    try:
        yield
    finally:
        for (layer, name), value in zip(state, latest):
            setattr(layer, name, value)


def release_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Free ``optimizer``'s gradients after its step, and give the heap memory the step freed back
    to the system.

    Nothing reads the gradients before the next ``zero_grad``, which would set them to None anyway
    (so no number changes). glibc keeps freed tensors below 32 MB in its heap for reuse, and the
    holes between live tensors add up: a lean U-GAT-IT step at 256 px on the CPU peaked ~1 GiB
    above its live tensors. ``malloc_trim`` returns the free pages between the D and the G step
    (4.48 -> 3.97 GiB peak resident set); they are faulted in again when reused. A fixed mmap
    threshold returned more but made CPU steps 2-4x slower. Elsewhere than glibc it does nothing.
    """
    optimizer.zero_grad(set_to_none=True)
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where there is none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
