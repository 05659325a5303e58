"""The FAN landmark network of the official code and the face masks it makes for the generator.

A one-stack hourglass with CoordConv predicting 98 WFLW landmarks; its heatmaps, post-processed
as the official code does, become the two masks with which the generator (``w_hpf > 0``) keeps
a face's identity. Its weights are the official pretrained ``wing.ckpt``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from ...files import load_torch_file

FAN_SIZE = 256  # the landmark network sees (and its masks come at) 256 x 256


class _CoordConv(nn.Module):
    """Conv over the input plus row, column (both in [-1, 1]) and normalised-radius channels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 3, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        rows = (torch.arange(h, device=x.device, dtype=x.dtype) / (h - 1) * 2 - 1)[:, None].expand(h, w)
        cols = (torch.arange(w, device=x.device, dtype=x.dtype) / (w - 1) * 2 - 1)[None, :].expand(h, w)
        radius = torch.sqrt(rows**2 + cols**2)
        coords = torch.stack([rows, cols, radius / radius.max()])
        return self.conv(torch.cat([x, coords.expand(b, -1, -1, -1)], dim=1))


class _ConvBlock(nn.Module):
    """FAN residual block: three BN-ReLU-conv3x3 stages of widths out/2, out/4, out/4, concatenated."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, half, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(),
                                            nn.Conv2d(in_planes, out_planes, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class _HourGlass(nn.Module):
    """Recursive hourglass: at each level a full-resolution branch plus a pooled, recursed, upsampled one."""

    def __init__(self, depth: int = 4, features: int = 256):
        super().__init__()
        self.depth = depth
        self.coordconv = _CoordConv(features, features, 1)
        for level in range(1, depth + 1):
            for branch in ("b1", "b2", "b3"):
                self.add_module(f"{branch}_{level}", _ConvBlock(features, features))
        self.add_module("b2_plus_1", _ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2))
        low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, self.coordconv(x))


# WFLW landmark index ranges [start, end) of the face parts the masks are made of.
FACE_PARTS = {"chin": (8, 25), "eyebrows": (33, 51), "eyebrow_edges": (33, 46), "nose": (51, 55),
              "nostrils": (55, 60), "eyes": (60, 76), "lip_edges": (76, 82), "lip_upper": (77, 82),
              "lip_lower": (83, 88), "lip_inner": (88, 96)}
# (rows to move up, exponent) applied to each part's heatmaps: shifts place the blobs over the
# regions to keep (e.g. above the eyebrows), exponents sharpen them. The official values at 256 px.
PART_SHAPING = {"chin": (0, 3), "eyebrows": (-7, 2), "nostrils": (8, 4), "lip_upper": (-8, 4),
                "lip_lower": (8, 4), "lip_inner": (-2, 3)}
HEATMAP_THRESHOLD = 0.1


def _shift_up(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Move maps ``rows`` pixels up (negative: down), wrapping around, as the official ``shift``."""
    return torch.roll(x, shifts=-rows, dims=2)


def face_masks(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """98 landmark heatmaps [B,98,256,256] → (whole-face mask, inner-face mask), each [B,1,256,256] in [0,1].

    The official post-processing: drop weak responses, min-max normalise each map, move and
    sharpen the part maps, drop the face outline and the brow/lip corners, add two shifted copies
    of the eye maps, and sum. The inner mask also leaves out chin, mouth and eyebrows.
    """
    x = heatmaps.where(heatmaps >= HEATMAP_THRESHOLD, torch.zeros_like(heatmaps))
    flat = x.flatten(2)
    low, high = flat.amin(dim=2)[..., None, None], flat.amax(dim=2)[..., None, None]
    x = (x - low) / (high - low + 1e-6)
    for part, (rows, power) in PART_SHAPING.items():
        start, end = FACE_PARTS[part]
        x[:, start:end] = _shift_up(x[:, start:end], rows) ** power
    chin_start, chin_end = FACE_PARTS["chin"]
    outline = [*range(0, chin_start), *range(chin_end, FACE_PARTS["eyebrows"][0]),
               *FACE_PARTS["eyebrow_edges"], *FACE_PARTS["lip_edges"]]
    x[:, outline] = 0
    start, end = FACE_PARTS["nose"]
    x[:, start + 1:end] = _shift_up(x[:, start + 1:end], 4)
    start, end = FACE_PARTS["eyes"]
    eyes = x[:, start:end]
    x[:, start:end] = _shift_up(eyes, -8) ** 3 + _shift_up(eyes, -24)
    inner = x.clone()
    for part in ("chin", "eyebrows"):
        start, end = FACE_PARTS[part]
        inner[:, start:end] = 0
    inner[:, FACE_PARTS["lip_edges"][0]:FACE_PARTS["lip_inner"][1]] = 0

    def total(maps: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(maps.sum(dim=1, keepdim=True), nan=0.0).clamp(0, 1)

    return total(x), total(inner)


class FAN(nn.Module):
    """Face alignment network (98 landmarks) used only to make the generator's face masks.

    Attribute names are the official ones so the pretrained ``wing.ckpt`` loads as it is.
    """

    def __init__(self, num_landmarks: int = 98):
        super().__init__()
        self.conv1 = _CoordConv(3, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = _ConvBlock(64, 128)
        self.conv3 = _ConvBlock(128, 128)
        self.conv4 = _ConvBlock(128, 256)
        self.m0 = _HourGlass(4, 256)
        self.top_m_0 = _ConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1, 1, 0)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = nn.Conv2d(256, num_landmarks + 1, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [0,1], 256x256 → landmark heatmaps [B, 99, 64, 64] (the last is the background)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2)))
        x = self.top_m_0(self.m0(x))
        return self.l0(F.relu(self.bn_end0(self.conv_last0(x))))

    @torch.no_grad()
    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Generator images in [-1,1] (any size) → the two face masks at 256 px (official ``get_heatmap``)."""
        x = F.interpolate(x, size=FAN_SIZE, mode="bilinear")
        heatmaps = self(x * 0.5 + 0.5)[:, :-1]
        heatmaps = F.interpolate(heatmaps, scale_factor=FAN_SIZE // heatmaps.size(2), mode="bilinear",
                                 align_corners=True)
        return face_masks(heatmaps)


def load_fan(path: str | Path) -> FAN:
    """The FAN with the official pretrained weights (``wing.ckpt``), frozen in eval mode.

    The file is read with ``weights_only=True``; extra tensors (deeper stacks) are ignored,
    missing or misshapen ones are a UserError.
    """
    saved = load_torch_file(path, "a FAN checkpoint", "the official wing.ckpt, needed for --w-hpf > 0")
    saved = saved.get("state_dict", saved) if isinstance(saved, dict) else {}
    found = {str(k).removeprefix("module."): v for k, v in saved.items() if isinstance(v, torch.Tensor)}
    fan = FAN()
    state = fan.state_dict()
    for key, tensor in state.items():
        if key not in found:
            if key.endswith("num_batches_tracked"):
                continue
            raise UserError(f"{path} is not a FAN (wing.ckpt) checkpoint: tensor {key} is missing")
        if found[key].shape != tensor.shape:
            raise UserError(f"{path}: tensor {key} has shape {tuple(found[key].shape)}, "
                            f"the FAN expects {tuple(tensor.shape)}")
        state[key] = found[key]
    fan.load_state_dict(state)
    return fan.eval().requires_grad_(False)


def generate(generator: nn.Module, x: torch.Tensor, s: torch.Tensor, fan: FAN | None = None) -> torch.Tensor:
    """Translate ``x`` with style ``s``; with a FAN, face masks of ``x`` guide the generator."""
    return generator(x, s, masks=fan.masks(x) if fan is not None else None)
