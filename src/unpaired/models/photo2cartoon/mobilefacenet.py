"""MobileFaceNet (Chen et al., 2018): the face-embedding network behind photo2cartoon's face-ID loss.

A 112×112 face becomes a 512-d unit vector: a stride-2 3×3 stem, a depthwise 3×3 conv, then
inverted bottlenecks (1×1 expansion → depthwise 3×3 → linear 1×1 projection, with a residual
when the shape allows), a global depthwise 7×7 conv (GDC) in place of pooling, and a linear
layer with BatchNorm. Attribute names are those of the InsightFace_Pytorch definition that
photo2cartoon uses, so the ``model_mobilefacenet.pth`` its users already have loads with
``strict=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...checkpoint import load_strict
from ...errors import UserError
from ...files import load_torch_file

INPUT_SIZE = 112
EMBEDDING_SIZE = 512


class ConvBN(nn.Module):
    """Bias-free conv + BatchNorm, followed by a PReLU unless ``act`` is False (a linear layer)."""

    def __init__(self, in_c: int, out_c: int, kernel: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class DepthWise(nn.Module):
    """Inverted bottleneck: expand to ``expand_c`` (1×1), depthwise 3×3, project linearly to ``out_c``."""

    def __init__(self, in_c: int, out_c: int, expand_c: int, stride: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.conv = ConvBN(in_c, expand_c)
        self.conv_dw = ConvBN(expand_c, expand_c, kernel=3, stride=stride, padding=1, groups=expand_c)
        self.project = ConvBN(expand_c, out_c, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.conv_dw(self.conv(x)))
        return x + out if self.residual else out


class Residual(nn.Module):
    """``n`` shape-keeping residual bottlenecks (held in ``model``, as the checkpoint keys expect)."""

    def __init__(self, channels: int, n: int, expand_c: int):
        super().__init__()
        self.model = nn.Sequential(*(DepthWise(channels, channels, expand_c, 1, residual=True) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """112×112 RGB face in [-1, 1] → L2-normalised embedding [B, embedding_size].

    Spatial sizes: 112 → 56 (stem) → 28 → 14 → 7 (stride-2 bottlenecks) → 1 (GDC).
    """

    def __init__(self, embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        self.conv1 = ConvBN(3, 64, kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvBN(64, 64, kernel=3, padding=1, groups=64)
        self.conv_23 = DepthWise(64, 64, 128, stride=2)
        self.conv_3 = Residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, 256, stride=2)
        self.conv_4 = Residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, 512, stride=2)
        self.conv_5 = Residual(128, 2, 256)
        self.conv_6_sep = ConvBN(128, 512)
        self.conv_6_dw = ConvBN(512, 512, kernel=7, groups=512, act=False)
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34, self.conv_4,
                      self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = stage(x)
        return F.normalize(self.bn(self.linear(x.flatten(1))), dim=1)


def load_mobilefacenet(path: Path) -> MobileFaceNet:
    """A MobileFaceNet with the weights of ``path`` (a state_dict, read without unpickling code)."""
    state = load_torch_file(path, "a MobileFaceNet state_dict", "photo2cartoon's model_mobilefacenet.pth")
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a MobileFaceNet state_dict (it holds a {type(state).__name__})")
    net = MobileFaceNet()
    load_strict(net, state, path, "the MobileFaceNet (512-d) weights")
    return net
