"""Building blocks shared by the translation models.

The normalisations and the CAM head follow the official U-GAT-IT PyTorch code operation by
operation (same statistics, same expression order), because the parity fixtures compare bit
patterns, not just shapes. Module attribute names are the official ones, so official
checkpoints load without renaming keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

NORM_EPS = 1e-5


def layer_instance_mix(x: torch.Tensor, rho: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Mix instance-norm and layer-norm of ``x`` with per-channel weight ``rho`` (AdaLIN/LIN core).

    Both statistics use the *unbiased* variance (``torch.var`` default), as the official code
    does; the encoder's ``nn.InstanceNorm2d`` uses the biased one. Keep it: it changes numbers.
    """
    in_mean, in_var = torch.mean(x, dim=[2, 3], keepdim=True), torch.var(x, dim=[2, 3], keepdim=True)
    out_in = (x - in_mean) / torch.sqrt(in_var + eps)
    ln_mean, ln_var = torch.mean(x, dim=[1, 2, 3], keepdim=True), torch.var(x, dim=[1, 2, 3], keepdim=True)
    out_ln = (x - ln_mean) / torch.sqrt(ln_var + eps)
    # ρ broadcasts over the batch in each term. The official code expands it to the batch per term:
    # same values and the same gradient sums (photo2cartoon training verified bit-identical), but
    # an expand to the traced batch size hides the channel count from the ONNX exporter.
    return rho * out_in + (1 - rho) * out_ln


class AdaILN(nn.Module):
    """Adaptive Layer-Instance Normalisation: γ, β come per sample from the generator's MLP."""

    def __init__(self, num_features: int, eps: float = NORM_EPS, rho_init: float = 0.9):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), rho_init))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = layer_instance_mix(x, self.rho, self.eps)
        return out * gamma.unsqueeze(2).unsqueeze(3) + beta.unsqueeze(2).unsqueeze(3)


class ILN(nn.Module):
    """Layer-Instance Normalisation with learned affine parameters (the decoder's "LIN").

    ρ starts at 0, so at initialisation it is a pure layer norm.
    """

    def __init__(self, num_features: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_instance_mix(x, self.rho, self.eps) * self.gamma + self.beta  # broadcast: see above


def clip_rho(module: nn.Module, low: float = 0.0, high: float = 1.0) -> None:
    """Clamp every ``rho`` in ``module`` in place (the official RhoClipper, run after each G step).

    It writes the data directly, after Adam, so Adam's moments keep the unclipped dynamics.
    """
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (AdaILN, ILN)):
                sub.rho.clamp_(low, high)


class ResnetBlock(nn.Module):
    """Encoder residual block: pad-conv-IN-ReLU-pad-conv-IN plus identity (no activation after)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=False),
            nn.InstanceNorm2d(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=False),
            nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetAdaILNBlock(nn.Module):
    """Decoder bottleneck block: two 3×3 convs with adaptive norms, one conditioning shared by both.

    ``norm`` makes the norm layers: AdaILN (U-GAT-IT, conditioned on γ, β) or photo2cartoon's
    SoftAdaLIN (conditioned on content and style features); ``forward`` passes ``cond`` through.
    """

    def __init__(self, dim: int, norm: Callable[[int], nn.Module] = AdaILN):
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=False)
        self.norm1 = norm(dim)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=False)
        self.norm2 = norm(dim)

    def forward(self, x: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), *cond))
        out = self.norm2(self.conv2(self.pad2(out)), *cond)
        return out + x


def cam_attention(
    x: torch.Tensor,
    gap_fc: nn.Module,
    gmp_fc: nn.Module,
    conv1x1: nn.Module,
    activation: nn.Module,
    weight_of: Callable[[nn.Module], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-activation-map attention shared by generator and discriminator.

    Two bias-free linear classifiers score the globally average- and max-pooled features;
    their weight vectors rescale the feature channels, the two rescaled maps are fused by a
    1×1 conv, and the channel sum of the result is the attention heatmap. ``gap_weight`` /
    ``gmp_weight`` are passed explicitly because the discriminator (official quirk) scales
    with the raw, not the spectrally normalised, weight.

    Returns ``(features, cam_logit [B,2] = [gap, gmp], heatmap [B,1,h,w])``.
    """
    batch = x.shape[0]
    gap_logit = gap_fc(F.adaptive_avg_pool2d(x, 1).view(batch, -1))
    x_gap = x * weight_of(gap_fc).unsqueeze(2).unsqueeze(3)
    gmp_logit = gmp_fc(F.adaptive_max_pool2d(x, 1).view(batch, -1))
    x_gmp = x * weight_of(gmp_fc).unsqueeze(2).unsqueeze(3)
    cam_logit = torch.cat([gap_logit, gmp_logit], 1)
    features = activation(conv1x1(torch.cat([x_gap, x_gmp], 1)))
    heatmap = torch.sum(features, dim=1, keepdim=True)
    return features, cam_logit, heatmap
