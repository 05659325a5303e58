"""StarGAN v2 networks (Choi et al., CVPR 2020) and the FAN landmark network behind its face masks.

Generator, mapping network F, style encoder E and multi-task discriminator D are built in the
official clovaai/stargan-v2 layout with its parameter names, so its checkpoints load key for key
(once DataParallel's ``module.`` prefix is stripped). Deliberate differences:

* the first width is ``min(2**14 // img_size, max_conv_dim)``: the official value for every size
  it supports (>= 32), while a small ``max_conv_dim`` now caps every layer (tiny test models);
* with ``w_hpf > 0`` the high-pass skips sit at img_size/8, /4, /2 (official: fixed 32, 64, 128,
  the same at its 256 px) and the unused 1x1 shortcuts of the decoder are not created (official
  checkpoints carry ``decode.*.conv1x1.weight`` tensors that nothing reads; drop them on import);
* He initialisation draws from an explicit seed, and the EMA copies are taken after it (official:
  before, so its EMA nets started from PyTorch's default init and took ~5k steps to forget it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserError
from ..files import load_torch_file

TRAINED_NETS = ("generator", "mapping_network", "style_encoder", "discriminator")
EMA_NETS = ("generator", "mapping_network", "style_encoder")
EMA_SUFFIX = "_ema"
NET_NAMES = TRAINED_NETS + tuple(name + EMA_SUFFIX for name in EMA_NETS)
MAPPING_WIDTH = 512  # hidden width of the mapping network (fixed in the paper)
MIN_IMG_SIZE = 32  # smallest size with one down/up-sampling block in the generator
MIN_HPF_IMG_SIZE = 128  # the finest face-mask skip (img/8) must lie above the 8 px bottleneck
FAN_SIZE = 256  # the landmark network sees (and its masks come at) 256 x 256


def check_img_size(img_size: int, w_hpf: float = 0.0) -> None:
    """Refuse sizes the networks cannot be built for, naming the option."""
    if img_size < MIN_IMG_SIZE or img_size & (img_size - 1):
        raise UserError(f"--img-size must be a power of two >= {MIN_IMG_SIZE} for stargan_v2 (got {img_size})")
    if w_hpf > 0 and img_size < MIN_HPF_IMG_SIZE:
        raise UserError(f"--w-hpf > 0 (face masks) needs --img-size >= {MIN_HPF_IMG_SIZE} (got {img_size})")


@dataclass(frozen=True)
class StarGANv2Arch:
    """Everything that fixes the networks' shapes, plus the domain names a checkpoint serves."""

    img_size: int = 256
    style_dim: int = 64
    latent_dim: int = 16
    max_conv_dim: int = 512
    w_hpf: float = 0.0
    domains: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "domains", tuple(self.domains))
        check_img_size(self.img_size, self.w_hpf)
        if len(self.domains) < 2 or len(set(self.domains)) != len(self.domains):
            raise UserError(f"stargan_v2 needs at least two distinct domains (got {list(self.domains)})")

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StarGANv2Arch:
        """Inverse of ``to_dict`` (JSON turns the domain tuple into a list); unknown keys ignored."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


def first_width(img_size: int, max_conv_dim: int) -> int:
    """Channels after the first conv: the official 2**14 // img_size, capped by max_conv_dim."""
    return min(2**14 // img_size, max_conv_dim)


def select_domain(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row b of ``out[B, num_domains, ...]`` at domain ``y[b]``: the per-domain head each sample asks for."""
    return out[torch.arange(y.size(0), device=y.device), y]


# ----------------------------------------------------------------------------- building blocks


class ResBlk(nn.Module):
    """Pre-activation residual block (optional affine IN, optional 2x average-pool down-sampling).

    The sum is divided by sqrt(2) so that two unit-variance branches give a unit-variance output.
    """

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False):
        super().__init__()
        self.normalize, self.downsample = normalize, downsample
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1x1 is not None:
            x = self.conv1x1(x)
        return F.avg_pool2d(x, 2) if self.downsample else x

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(F.leaky_relu(x, 0.2))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Instance norm whose scale (1 + γ) and shift β are a linear function of the style code."""

    def __init__(self, style_dim: int, num_features: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder residual block with AdaIN (optional 2x nearest up-sampling).

    With face masks (``w_hpf > 0``) the block has no identity path: the high-pass skips from the
    encoder carry the source's structure instead, as in the official code.
    """

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, w_hpf: float = 0.0, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        self.shortcut = w_hpf == 0
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if self.shortcut and dim_in != dim_out else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv1x1 is None else self.conv1x1(x)

    def _residual(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.norm1(x, s), 0.2)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        return self.conv2(F.leaky_relu(self.norm2(x, s), 0.2))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self._residual(x, s)
        return (out + self._shortcut(x)) / math.sqrt(2) if self.shortcut else out


class HighPass(nn.Module):
    """Per-channel 3x3 Laplacian-like high-pass filter scaled by 1 / w_hpf (not a parameter)."""

    def __init__(self, w_hpf: float):
        super().__init__()
        kernel = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]) / w_hpf
        self.register_buffer("filter", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.filter.to(x.dtype).expand(x.size(1), 1, 3, 3).contiguous()
        return F.conv2d(x, weight, padding=1, groups=x.size(1))


# ----------------------------------------------------------------------------- the four networks


class Generator(nn.Module):
    """Encoder (IN residual blocks) → 2 bottleneck blocks → AdaIN decoder driven by a style code.

    ``log2(img_size) - 4`` down/up-sampling pairs (one more with face masks), widths doubling from
    ``first_width`` up to ``max_conv_dim``. ``masks`` (two [B,1,h,w] maps from ``FAN.masks``) add
    high-pass filtered encoder features back at three decoder resolutions to keep face identity.
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512, w_hpf: float = 0.0):
        super().__init__()
        dim_in = first_width(img_size, max_conv_dim)
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim_in, 3, 1, 1, 0))
        repeat_num = int(math.log2(img_size)) - 4 + (1 if w_hpf > 0 else 0)
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, w_hpf=w_hpf, upsample=True))
            dim_in = dim_out
        for _ in range(2):
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim, w_hpf=w_hpf))
        self.skip_sizes: tuple[int, ...] = ()
        if w_hpf > 0:
            self.hpf = HighPass(w_hpf)
            self.skip_sizes = (img_size // 8, img_size // 4, img_size // 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if masks is not None and not self.skip_sizes:
            raise ValueError("face masks given to a generator built with w_hpf = 0")
        use_masks = masks is not None
        x = self.from_rgb(x)
        cache = {}
        for block in self.encode:
            if use_masks and x.size(2) in self.skip_sizes:
                cache[x.size(2)] = x
            x = block(x)
        for block in self.decode:
            x = block(x, s)
            if use_masks and x.size(2) in self.skip_sizes:
                mask = masks[0] if x.size(2) == self.skip_sizes[0] else masks[1]
                mask = F.interpolate(mask, size=x.size(2), mode="bilinear")
                x = x + self.hpf(mask * cache[x.size(2)])
        return self.to_rgb(x)


def _mlp(dims: list[int], final_relu: bool) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if final_relu or i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MappingNetwork(nn.Module):
    """Latent z → style code of domain y: a shared 4-layer MLP, then one 4-layer head per domain."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2):
        super().__init__()
        w = MAPPING_WIDTH
        self.shared = _mlp([latent_dim, w, w, w, w], final_relu=True)
        self.unshared = nn.ModuleList(_mlp([w, w, w, w, style_dim], final_relu=False) for _ in range(num_domains))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        return select_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


def _downsampling_trunk(img_size: int, max_conv_dim: int) -> tuple[list[nn.Module], int]:
    """Layers shared by style encoder and discriminator: conv, residual down-sampling to 4x4, 4x4 conv to 1x1."""
    dim_in = first_width(img_size, max_conv_dim)
    blocks: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(int(math.log2(img_size)) - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        blocks.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_out


class StyleEncoder(nn.Module):
    """Image → style code of domain y: the shared trunk, then one linear head per domain."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512):
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, max_conv_dim)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(x).flatten(1)
        return select_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


class Discriminator(nn.Module):
    """Multi-task discriminator: one real/fake logit per domain; returns the logit of domain y, [B]."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512):
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, max_conv_dim)
        self.main = nn.Sequential(*blocks, nn.Conv2d(dim_out, num_domains, 1, 1, 0))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return select_domain(self.main(x).flatten(1), y)


# ----------------------------------------------------------------------------- construction


def he_init_(module: nn.Module, generator: torch.Generator) -> None:
    """The official init: Kaiming-normal (fan_in, ReLU gain) for every conv and linear weight, zero bias."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_translation_nets(arch: StarGANv2Arch) -> dict[str, nn.Module]:
    """Generator, mapping network and style encoder (uninitialised): what inference loads EMA weights into."""
    return {
        "generator": Generator(arch.img_size, arch.style_dim, arch.max_conv_dim, arch.w_hpf),
        "mapping_network": MappingNetwork(arch.latent_dim, arch.style_dim, arch.num_domains),
        "style_encoder": StyleEncoder(arch.img_size, arch.style_dim, arch.num_domains, arch.max_conv_dim),
    }


def build_stargan_v2(arch: StarGANv2Arch, seed: int = 0) -> dict[str, nn.Module]:
    """The four trained networks, He-initialised from ``seed``, plus EMA copies of G, F and E.

    Keys are ``NET_NAMES``; every weight comes from ``seed`` alone (the global RNG is not read).
    """
    nets = build_translation_nets(arch)
    nets["discriminator"] = Discriminator(arch.img_size, arch.num_domains, arch.max_conv_dim)
    generator = torch.Generator().manual_seed(seed)
    for name in TRAINED_NETS:
        he_init_(nets[name], generator)
    for name in EMA_NETS:
        nets[name + EMA_SUFFIX] = copy.deepcopy(nets[name])
    return {name: nets[name] for name in NET_NAMES}


def ema_nets(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The EMA copies under their base names (generator, mapping_network, style_encoder), for sampling."""
    return {name: nets[name + EMA_SUFFIX] for name in EMA_NETS}


# ----------------------------------------------------------------------------- inference


class TranslationNets(nn.Module):
    """Generator, mapping network and style encoder as one module, for inference.

    Its state_dict keys (``generator.*``, ...) are the EMA nets' stored ones minus the ``_ema``
    suffix, so a checkpoint loads into it with one rename (see ``ema_state``).
    """

    def __init__(self, arch: StarGANv2Arch):
        super().__init__()
        nets = build_translation_nets(arch)
        self.generator = nets["generator"]
        self.mapping_network = nets["mapping_network"]
        self.style_encoder = nets["style_encoder"]


def ema_state(states: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A checkpoint's per-network states → the state_dict of ``TranslationNets`` (EMA copies: sampling uses them)."""
    return {f"{name}.{key}": tensor for name in EMA_NETS for key, tensor in states[name + EMA_SUFFIX].items()}


# How StarGAN v2 picks a style: the network that makes it, and what that network reads.
STYLE_NETS = {"latent": "mapping_network", "reference": "style_encoder"}


class GuidedTranslation(nn.Module):
    """(image x, style source, target domain index y) → image, for one ``guide``: "latent" (the
    mapping network turns a latent code z into the style) or "reference" (the style encoder reads
    it off a reference image as it would look in domain y).

    Plain tensors in and out, so the same module runs in PyTorch and is what ONNX export traces.
    """

    def __init__(self, nets: TranslationNets, guide: str, fan: FAN | None = None):
        super().__init__()
        self.nets, self.guide, self.fan = nets, guide, fan

    def forward(self, x: torch.Tensor, source: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        style = getattr(self.nets, STYLE_NETS[self.guide])(source, y)
        return generate(self.nets.generator, x, style, self.fan)


# ----------------------------------------------------------------------------- face masks (w_hpf > 0)
# The FAN of the official code (one-stack hourglass with CoordConv, 98 WFLW landmarks) and its
# heatmap -> mask post-processing. Its weights are the official pretrained ``wing.ckpt``.


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
