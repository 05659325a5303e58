"""StarGAN v2 networks (Choi et al., CVPR 2020) and the FAN landmark network behind its face masks.

Generator, mapping network F, style encoder E and multi-task discriminator D are built in the
official clovaai/stargan-v2 layout with its parameter names, so its checkpoints load key for key
(once DataParallel's ``module.`` prefix is stripped). Deliberate differences:

* the first width is ``min(2**14 // img_size, max_conv_dim)``: the official value for every size
  it supports (>= 32), while a small ``max_conv_dim`` now caps every layer (tiny test models);
* with ``w_hpf > 0`` the high-pass skips sit at img_size/8, /4, /2 (official: fixed 32, 64, 128,
  the same at its 256 px) and the unused 1x1 shortcuts of the decoder are not created (official
  checkpoints carry ``decode.*.conv1x1.weight`` tensors that nothing reads; drop them on import);
* He initialisation draws from an explicit seed (official: the global RNG, after the default
  initialisation). The EMA copies are taken before it, as official, so that they start from
  PyTorch's default initialisation, bit for bit the official EMA nets of the same seed;
  ``ema_init="after"`` (``--ema-init after``) copies the He-initialised networks instead, as
  unpaired 0.1 did.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from .options import EMA_INITS, StarGANv2Arch

TRAINED_NETS = ("generator", "mapping_network", "style_encoder", "discriminator")
EMA_NETS = ("generator", "mapping_network", "style_encoder")
EMA_SUFFIX = "_ema"
NET_NAMES = TRAINED_NETS + tuple(name + EMA_SUFFIX for name in EMA_NETS)
MAPPING_WIDTH = 512  # hidden width of the mapping network (fixed in the paper)


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

    def memory_blocks(self) -> list[nn.Module]:
        """What ``--memory lean`` recomputes (training/memory.py): every residual block and the output layers."""
        return [*self.encode, *self.decode, self.to_rgb]

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


def _residual_blocks(trunk: nn.Sequential) -> list[nn.Module]:
    """What ``--memory lean`` recomputes of a down-sampling trunk (training/memory.py): its residual blocks."""
    return [block for block in trunk if isinstance(block, ResBlk)]


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

    def memory_blocks(self) -> list[nn.Module]:
        return _residual_blocks(self.shared)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(x).flatten(1)
        return select_domain(torch.stack([head(h) for head in self.unshared], dim=1), y)


class Discriminator(nn.Module):
    """Multi-task discriminator: one real/fake logit per domain; returns the logit of domain y, [B]."""

    memory_keeps_convolutions = False  # the R1 penalty differentiates its real-image call twice

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512):
        super().__init__()
        blocks, dim_out = _downsampling_trunk(img_size, max_conv_dim)
        self.main = nn.Sequential(*blocks, nn.Conv2d(dim_out, num_domains, 1, 1, 0))

    def memory_blocks(self) -> list[nn.Module]:
        return _residual_blocks(self.main)

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


def build_stargan_v2(arch: StarGANv2Arch, seed: int = 0, ema_init: str = "before") -> dict[str, nn.Module]:
    """The four trained networks, He-initialised from ``seed``, plus EMA copies of G, F and E.

    Keys are ``NET_NAMES``; every weight comes from ``seed`` alone (the global RNG is left as it
    was). The networks are built in the official order after seeding, as the official code does
    with ``torch.manual_seed(seed)``, so their default initialisation is the official one;
    ``ema_init`` "before" takes the EMA copies from it, "after" from the He-initialised networks.
    """
    if ema_init not in EMA_INITS:
        raise ValueError(f"ema_init must be one of {EMA_INITS}, got {ema_init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_translation_nets(arch)
        nets["discriminator"] = Discriminator(arch.img_size, arch.num_domains, arch.max_conv_dim)

    def copies() -> dict[str, nn.Module]:
        return {name + EMA_SUFFIX: copy.deepcopy(nets[name]) for name in EMA_NETS}

    ema = copies() if ema_init == "before" else None
    generator = torch.Generator().manual_seed(seed)
    for name in TRAINED_NETS:
        he_init_(nets[name], generator)
    nets.update(ema if ema is not None else copies())
    return {name: nets[name] for name in NET_NAMES}


def ema_nets(nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The EMA copies under their base names (generator, mapping_network, style_encoder), for sampling."""
    return {name: nets[name + EMA_SUFFIX] for name in EMA_NETS}
