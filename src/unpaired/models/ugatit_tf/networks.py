"""U-GAT-IT networks as the official TensorFlow code computes them (taki0112/UGATIT, HEAD d508e8f).

Same layers, operations and parameters as the TF graph, written as PyTorch modules (NCHW inside;
``official.py`` converts TF's HWIO/[in, out] kernels). What differs from our PyTorch-port networks
(``models/ugatit.py``), each reproduced from ``ops.py`` / ``UGATIT.py`` of the TF code:

* every conv has a bias; reflect padding follows ``ops.conv``: symmetric when kernel − stride is
  even, else (top/left ``pad``, bottom/right ``kernel − stride − pad``), so the 3×3 stride-2
  convs pad (1, 0) and the 4×4 stride-1 convs (1, 2), keeping their map size;
* the encoder's instance norms have a learned scale and offset; adaLIN and LIN use the biased
  variance; adaLIN's ρ starts at 1 and, with ``smoothing``, is used as clip(ρ − 0.1, 0, 1);
* the CAM head is one linear layer ``[C, 1]`` with a bias, shared by the GAP and the GMP logit,
  and both feature halves are scaled by ``w + b`` (the discriminator's ``w`` spectrally normalised);
* the γ/β MLP layers have biases; the full model's MLP reads the NHWC flatten (h, w, c) of the map;
* spectral norm keeps only ``u`` and runs one power iteration on every call (no eval mode);
  a discriminator runs all of them before its branches (``TFDiscriminator.forward``);
* one discriminator per domain holds a local and a global branch (``n_dis`` sets both depths).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ...training.memory import PER_CALL
from .options import UGATITTFArch

NORM_EPS = 1e-5
L2_EPS = 1e-12  # tf.nn.l2_normalize's epsilon
INIT_STD = 0.02  # ops.weight_init: N(0, 0.02) for every kernel
LEAKY_SLOPE = 0.2
RHO_SMOOTHING = 0.1
NET_NAMES = ("genA2B", "genB2A", "disA", "disB")
GENERATOR_NAMES = NET_NAMES[:2]
DISCRIMINATOR_NAMES = NET_NAMES[2:]


# ----------------------------------------------------------------------------- building blocks


def reflect_padding(kernel: int, stride: int, pad: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of TF ``ops.conv`` for ``pad > 0``."""
    if pad == 0:
        return (0, 0, 0, 0)
    if (kernel - stride) % 2 == 0:
        return (pad, pad, pad, pad)
    far = kernel - stride - pad
    return (pad, far, pad, far)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``tf.nn.l2_normalize`` over the whole tensor: x · rsqrt(max(Σx², 1e-12))."""
    return x * torch.rsqrt(torch.clamp((x * x).sum(), min=L2_EPS))


def power_iteration(matrix: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of ``ops.spectral_norm``: ``(sigma [1,1], u')`` for ``matrix`` [out, K] and ``u`` [1, out].

    TF reshapes the kernel to ``W`` [K, out]; here ``matrix = Wᵀ``. ``v = l2n(u Wᵀ)``,
    ``u' = l2n(v W)``, ``sigma = v W u'ᵀ``, with ``u'`` and ``v`` treated as constants
    (``tf.stop_gradient``), so only sigma's dependence on the kernel is differentiated. Always
    fp32: under autocast a low-precision sigma would rescale every weight by its rounding.
    """
    with torch.autocast(matrix.device.type, enabled=False):
        matrix = matrix.float()
        with torch.no_grad():
            v = l2_normalize(u @ matrix)
            u_hat = l2_normalize(v @ matrix.t())
        return (v @ matrix.t()) @ u_hat.t(), u_hat


class SpectralNormed(nn.Module):
    """A layer whose kernel is spectrally normalised by the σ its discriminator sets per call.

    ``sn_sigma`` is set by ``advance_spectral_norm`` before the layer runs and cleared after the
    discriminator's call; it is the layer's per-call state (``training.memory.PER_CALL``), so a
    recomputation in ``--memory lean`` reuses the σ of its own call instead of advancing ``u``
    again.
    """

    def _init_spectral_norm(self, out_features: int, sn: bool) -> None:
        self.sn, self.sn_sigma = sn, None
        if sn:
            self.register_buffer("u", torch.randn(1, out_features))
            setattr(self, PER_CALL, ("sn_sigma",))

    def advance_spectral_norm(self) -> None:
        """σ of the kernel from the stored ``u``, writing ``u'`` back (TF's ``u.assign(u_hat)``)."""
        self.sn_sigma, u_hat = power_iteration(self.weight.flatten(1), self.u)
        with torch.no_grad():
            self.u.copy_(u_hat)

    def _sigma(self) -> torch.Tensor:
        if self.sn_sigma is None:
            raise RuntimeError(f"{type(self).__name__} with spectral norm called outside its discriminator")
        return self.sn_sigma


class TFConv(SpectralNormed):
    """``ops.conv``: reflect padding by TF's rule, a kernel, a bias, optionally spectral norm.

    ``sn_outputs`` computes conv(x, W)/σ + b instead of conv(x, W/σ) + b: equal math, not equal
    rounding, and cheaper for the wide, small-map discriminator layers (see ``train/speed.py``).
    It is off by default (bit-faithful to the weight division TF does).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, pad: int = 0, sn: bool = False):
        super().__init__()
        self.stride, self.padding = stride, reflect_padding(kernel, stride, pad)
        self.sn_outputs = False
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, kernel, kernel).normal_(0.0, INIT_STD))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self._init_spectral_norm(out_ch, sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding, mode="reflect")
        if not self.sn:
            return F.conv2d(x, self.weight, self.bias, self.stride)
        sigma = self._sigma()
        if self.sn_outputs:
            return F.conv2d(x, self.weight, None, self.stride) / sigma + self.bias.view(1, -1, 1, 1)
        return F.conv2d(x, self.weight / sigma, self.bias, self.stride)


def _glorot_uniform(*shape: int) -> torch.Tensor:
    """TF's default initializer (``tf.get_variable`` without one); TF shapes: [C, 1] and [1]."""
    fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else (shape[0], shape[-1])
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(*shape).uniform_(-limit, limit)


class CAM(SpectralNormed):
    """``ops.fully_connected_with_w`` called twice (GAP, then GMP with ``reuse=True``).

    One kernel ``weight`` (TF ``CAM_logit/kernel`` [C, 1], stored here as [1, C]) and ``bias``
    score both pooled vectors, ``logit = pooled · w + b``; both halves of the returned features
    are ``x · (w + b)``, so the following 1×1 conv sees the same map twice. With ``sn`` (the
    discriminator) ``w`` is spectrally normalised, once per call: the TF graph runs the power
    iteration for each of the two uses, from the same stored ``u`` and with the same result
    (for one output, ``u' = sign(u)`` and sigma = ‖w‖), so one run gives the same numbers and
    gradients.

    ``legacy``: the code before 2019-08-19/20. Without sn (generator), the logits came from a
    separate ``tf.layers.dense`` (``CAM_logit/dense/{kernel,bias}``: here ``weight``, ``bias``)
    while the features were scaled by ``CAM_logit/{kernel,bias}`` (here ``feature_weight``,
    ``feature_bias``: TF default glorot-uniform init, no L2 regulariser). With sn
    (discriminator), the features were scaled by the kernel *before* spectral norm.
    """

    def __init__(self, channels: int, sn: bool = False, legacy: bool = False):
        super().__init__()
        self.legacy = legacy
        self.weight = nn.Parameter(torch.empty(1, channels).normal_(0.0, INIT_STD))
        self.bias = nn.Parameter(torch.zeros(1))
        self._init_spectral_norm(1, sn)
        if legacy and not sn:
            self.feature_weight = nn.Parameter(_glorot_uniform(channels, 1).t().contiguous())
            self.feature_bias = nn.Parameter(_glorot_uniform(1))

    def _feature_scale(self, logit_weight: torch.Tensor) -> torch.Tensor:
        if not self.legacy:
            return logit_weight + self.bias
        if self.sn:
            return self.weight + self.bias
        return self.feature_weight + self.feature_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [B, 2C, h, w], cam_logit [B, 2] = [GAP, GMP])``."""
        weight = self.weight
        if self.sn:
            weight = weight / self._sigma()
        gap = F.linear(x.mean(dim=(2, 3)), weight, self.bias)
        gmp = F.linear(x.amax(dim=(2, 3)), weight, self.bias)  # amax splits ties like tf.reduce_max
        scaled = x * self._feature_scale(weight).view(1, -1, 1, 1)
        return torch.cat([scaled, scaled], 1), torch.cat([gap, gmp], 1)


class InstanceNorm(nn.Module):
    """``tf.contrib.layers.instance_norm`` (eps 1e-5, biased variance, learned ``gamma``, ``beta``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.gamma, bias=self.beta, eps=NORM_EPS)


def layer_instance_mix(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """ρ · IN(x) + (1 − ρ) · LN(x), statistics as ``tf.nn.moments`` (biased variance), eps 1e-5."""
    in_mean = x.mean(dim=(2, 3), keepdim=True)
    in_var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    ln_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    ln_var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    x_in = (x - in_mean) / torch.sqrt(in_var + NORM_EPS)
    x_ln = (x - ln_mean) / torch.sqrt(ln_var + NORM_EPS)
    rho = rho.view(1, -1, 1, 1)
    return rho * x_in + (1 - rho) * x_ln


class AdaLIN(nn.Module):
    """``ops.adaptive_instance_layer_norm``: ρ starts at 1; with ``smoothing`` the mix uses
    clip(ρ − 0.1, 0, 1), so at most 0.9 and no gradient once ρ < 0.1. γ, β come from the MLP."""

    def __init__(self, channels: int, smoothing: bool = True):
        super().__init__()
        self.smoothing = smoothing
        self.rho = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        rho = torch.clamp(self.rho - RHO_SMOOTHING, 0.0, 1.0) if self.smoothing else self.rho
        return layer_instance_mix(x, rho) * gamma + beta


class LIN(nn.Module):
    """``ops.layer_instance_norm`` of the up-sampling path: ρ (starts at 0, used as stored), γ, β."""

    def __init__(self, channels: int):
        super().__init__()
        self.rho = nn.Parameter(torch.zeros(channels))
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_instance_mix(x, self.rho) * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def clip_rho_(module: nn.Module) -> None:
    """Clamp every ρ to [0, 1] in place: the ``constraint`` TF applies after each optimiser update."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (AdaLIN, LIN)):
                sub.rho.clamp_(0.0, 1.0)


def linear(in_features: int, out_features: int) -> nn.Linear:
    """``ops.fully_connected`` without sn: a dense layer with bias, kernel N(0, 0.02), bias 0."""
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.normal_(0.0, INIT_STD)
        layer.bias.zero_()
    return layer


class ConvNorm(nn.Module):
    """A conv followed by a norm layer (the encoder's down-sampling and the decoder's up-sampling steps)."""

    def __init__(self, conv: TFConv, norm: nn.Module):
        super().__init__()
        self.conv, self.norm = conv, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResBlock(nn.Module):
    """``ops.resblock``: conv-IN-ReLU, conv-IN, plus the input (TF scopes res1, res2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.norm1 = TFConv(channels, channels, 3, 1, 1), InstanceNorm(channels)
        self.conv2, self.norm2 = TFConv(channels, channels, 3, 1, 1), InstanceNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(out))


class AdaptiveResBlock(nn.Module):
    """``ops.adaptive_ins_layer_resblock``: conv-adaLIN-ReLU, conv-adaLIN, plus the input."""

    def __init__(self, channels: int, smoothing: bool):
        super().__init__()
        self.conv1, self.norm1 = TFConv(channels, channels, 3, 1, 1), AdaLIN(channels, smoothing)
        self.conv2, self.norm2 = TFConv(channels, channels, 3, 1, 1), AdaLIN(channels, smoothing)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(out), gamma, beta)


class StyleMLP(nn.Module):
    """``UGATIT.MLP``: two ReLU dense layers, then the γ and β dense layers (all with biases).

    Light pools the features first; full flattens them in TF's NHWC order (h, w, c), which is
    what a released kernel ``MLP/linear_0`` expects. Returns γ, β as [B, C, 1, 1].
    """

    def __init__(self, in_features: int, width: int, light: bool):
        super().__init__()
        self.light = light
        self.linear_0, self.linear_1 = linear(in_features, width), linear(width, width)
        self.gamma, self.beta = linear(width, width), linear(width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = x.mean(dim=(2, 3)) if self.light else x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        z = F.relu(self.linear_1(F.relu(self.linear_0(z))))
        return self.gamma(z)[:, :, None, None], self.beta(z)[:, :, None, None]


# ----------------------------------------------------------------------------- networks


class TFGenerator(nn.Module):
    """``UGATIT.generator``: encoder, CAM attention, γ/β MLP, adaLIN bottleneck, LIN decoder.

    ``forward`` returns ``(image, cam_logit [B, 2], heatmap [B, 1, h, w])`` like our other
    generators; its stages are methods so that intermediate maps can be inspected.
    """

    def __init__(self, arch: UGATITTFArch):
        super().__init__()
        ch, width = arch.ch, 4 * arch.ch
        self.conv, self.ins_norm = TFConv(arch.img_ch, ch, 7, 1, 3), InstanceNorm(ch)
        self.down = nn.ModuleList(ConvNorm(TFConv(c, 2 * c, 3, 2, 1), InstanceNorm(2 * c)) for c in (ch, 2 * ch))
        self.resblocks = nn.ModuleList(ResBlock(width) for _ in range(arch.n_res))
        self.cam = CAM(width, legacy=arch.legacy_cam)
        self.conv_1x1 = TFConv(2 * width, width, 1)
        self.mlp = StyleMLP(arch.mlp_inputs, width, arch.light)
        self.adaptive_resblocks = nn.ModuleList(AdaptiveResBlock(width, arch.smoothing) for _ in range(arch.n_res))
        self.up = nn.ModuleList(ConvNorm(TFConv(c, c // 2, 3, 1, 1), LIN(c // 2)) for c in (width, 2 * ch))
        self.logit = TFConv(ch, arch.img_ch, 7, 1, 3)

    def memory_blocks(self) -> list[nn.Module]:
        """What ``--memory lean`` recomputes (training/memory.py): every conv and norm stage but the CAM head's."""
        return [self.conv, self.ins_norm, *self.down, *self.resblocks, *self.adaptive_resblocks, *self.up,
                self.logit]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.ins_norm(self.conv(x)))
        for block in (*self.down, *self.resblocks):
            x = block(x)
        return x

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CAM head: ``(ReLU(conv_1x1(weighted features)), cam_logit, heatmap = channel sum)``."""
        features, cam_logit = self.cam(x)
        x = F.relu(self.conv_1x1(features))
        return x, cam_logit, x.sum(dim=1, keepdim=True)

    def bottleneck(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        for block in self.adaptive_resblocks:
            x = block(x, gamma, beta)
        return x

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest ×2 then conv-LIN-ReLU, twice (``resize_nearest_neighbor`` = torch's nearest at ×2)."""
        for block in self.up:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"))
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, cam_logit, heatmap = self.attend(self.encode(x))
        gamma, beta = self.mlp(x)
        image = torch.tanh(self.logit(self.upsample(self.bottleneck(x, gamma, beta))))
        return image, cam_logit, heatmap


class DiscriminatorBranch(nn.Module):
    """``UGATIT.discriminator_local`` / ``discriminator_global``: stride-2 4×4 SN convs, one stride-1
    4×4 SN conv, the SN CAM head, a 1×1 conv (no sn), and a 4×4 SN logit conv; LeakyReLU 0.2."""

    def __init__(self, in_ch: int, ch: int, strided: int, legacy_cam: bool):
        super().__init__()
        widths = [in_ch] + [ch * 2 ** i for i in range(strided)]
        self.convs = nn.ModuleList(TFConv(a, b, 4, 2, 1, sn=True) for a, b in zip(widths, widths[1:]))
        width = 2 * widths[-1]
        self.conv_last = TFConv(widths[-1], width, 4, 1, 1, sn=True)
        self.cam = CAM(width, sn=True, legacy=legacy_cam)
        self.conv_1x1 = TFConv(2 * width, width, 1)
        self.d_logit = TFConv(width, 1, 4, 1, 1, sn=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for conv in (*self.convs, self.conv_last):
            x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        features, cam_logit = self.cam(x)
        x = F.leaky_relu(self.conv_1x1(features), LEAKY_SLOPE)
        return self.d_logit(x), cam_logit, x.sum(dim=1, keepdim=True)


class DiscriminatorOutput(NamedTuple):
    """One discriminator call; each field is ``(local, global)``, TF's list order."""

    logits: tuple[torch.Tensor, torch.Tensor]  # [B, 1, h, w] each
    cam_logits: tuple[torch.Tensor, torch.Tensor]  # [B, 2] each
    heatmaps: tuple[torch.Tensor, torch.Tensor]  # [B, 1, h', w'] each


class TFDiscriminator(nn.Module):
    """``UGATIT.discriminator``: the local and the global branch of one domain, on the same input.

    Every call advances each spectral norm from its stored ``u``. TF's D step calls a
    discriminator on real and on fake images and both calls start from the same stored ``u``;
    judging ``torch.cat([real, fake])`` in one call reproduces that (see ``train.py``). The
    power iterations run first, for every layer, then the branches with those σ: the same numbers
    as running each where its layer is, and what lets ``--memory lean`` recompute the branches
    without advancing ``u`` again (``memory_blocks``).
    """

    # Set by the recipe: False where the loss differentiates a call twice (a gradient penalty),
    # so the branches are recomputed whole, as training/memory.py needs.
    memory_keeps_convolutions = True

    def __init__(self, arch: UGATITTFArch):
        super().__init__()
        self.branches = nn.ModuleDict({
            "local": DiscriminatorBranch(arch.img_ch, arch.ch, arch.local_strided, arch.legacy_cam),
            "global": DiscriminatorBranch(arch.img_ch, arch.ch, arch.global_strided, arch.legacy_cam),
        })

    def memory_blocks(self) -> list[nn.Module]:
        """What ``--memory lean`` recomputes (training/memory.py): both branches, below the power iterations."""
        return list(self.branches.values())

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        normed = [layer for layer in self.modules() if isinstance(layer, SpectralNormed) and layer.sn]
        for layer in normed:
            layer.advance_spectral_norm()
        try:
            local, whole = self.branches["local"](x), self.branches["global"](x)
        finally:
            for layer in normed:
                layer.sn_sigma = None  # a call's σ is its own (lean recomputation keeps a copy)
        return DiscriminatorOutput(*zip(local, whole))


def set_sn_outputs(net: nn.Module, enabled: bool) -> None:
    """Switch every spectrally normalised conv of ``net`` to dividing outputs (True) or weights."""
    for module in net.modules():
        if isinstance(module, TFConv) and module.sn:
            module.sn_outputs = enabled


def build_ugatit_tf(arch: UGATITTFArch, sn_outputs: bool = False) -> dict[str, nn.Module]:
    """The four networks, named for what they do; TF scopes (swapped in the TF code, see README):

    ``genA2B`` = ``generator_B`` (TF ``generate_a2b``), ``genB2A`` = ``generator_A``,
    ``disA`` = ``discriminator_A`` (judges domain A), ``disB`` = ``discriminator_B``.
    Initialised as TF does (kernels N(0, 0.02), biases 0, norm scales 1, ρ 1 / 0, u N(0, 1))
    from torch's RNG; build under ``torch.device("meta")`` to get shapes without memory.
    """
    nets = {"genA2B": TFGenerator(arch), "genB2A": TFGenerator(arch),
            "disA": TFDiscriminator(arch), "disB": TFDiscriminator(arch)}
    for net in nets.values():
        set_sn_outputs(net, sn_outputs)
    return nets


def regularized_kernels(net: nn.Module) -> list[nn.Parameter]:
    """The tensors TF's ``l2_regularizer`` covers: every conv and dense kernel, and the CAM kernel
    (the discriminator's before spectral norm); not biases, norm parameters, ρ, u, nor the
    legacy CAM's feature weights (created without a regulariser)."""
    return [m.weight for m in net.modules() if isinstance(m, (TFConv, CAM, nn.Linear))]
