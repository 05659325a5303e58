"""U-GAT-IT networks (Kim et al., ICLR 2020) as the official PyTorch code builds them.

Layers are created in the official order, so a seeded construction draws the same initial
weights (PyTorch default init, spectral-norm u/v right after each wrapped layer); attribute
names are the official ones, so official state_dicts load as they are. Differences from the
official code are opt-in switches (see ``Discriminator(fix_cam_weight=...)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import spectral_norm

from ...nn import ILN, ResnetAdaILNBlock, ResnetBlock, cam_attention
from .options import UGATITArch

NET_NAMES = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")
GENERATOR_NAMES = NET_NAMES[:2]
DISCRIMINATOR_NAMES = NET_NAMES[2:]


class ResnetGenerator(nn.Module):
    """Encoder → CAM attention → γ/β MLP → AdaILN bottleneck → ILN up-sampling decoder.

    ``light`` pools the attended features before the MLP; the full variant flattens them, which
    ties the model to ``img_size`` (its first MLP layer has (S/4)²·4ch inputs).
    Returns ``(image, cam_logit, heatmap)``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ch: int = 64, n_res: int = 4,
                 img_size: int = 256, light: bool = False):
        super().__init__()
        if img_size % 4:
            raise ValueError(f"img_size must be a multiple of 4, got {img_size}")
        self.light = light
        self.n_res = n_res
        width = ch * 4
        encoder = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ch, 7, 1, 0, bias=False),
                   nn.InstanceNorm2d(ch), nn.ReLU(True)]
        for mult in (1, 2):
            encoder += [nn.ReflectionPad2d(1), nn.Conv2d(ch * mult, ch * mult * 2, 3, 2, 0, bias=False),
                        nn.InstanceNorm2d(ch * mult * 2), nn.ReLU(True)]
        encoder += [ResnetBlock(width) for _ in range(n_res)]
        self.DownBlock = nn.Sequential(*encoder)

        self.gap_fc = nn.Linear(width, 1, bias=False)
        self.gmp_fc = nn.Linear(width, 1, bias=False)
        self.conv1x1 = nn.Conv2d(width * 2, width, 1, 1, bias=True)
        self.relu = nn.ReLU(True)

        mlp_in = width if light else (img_size // 4) ** 2 * width
        self.FC = nn.Sequential(nn.Linear(mlp_in, width, bias=False), nn.ReLU(True),
                                nn.Linear(width, width, bias=False), nn.ReLU(True))
        self.gamma = nn.Linear(width, width, bias=False)
        self.beta = nn.Linear(width, width, bias=False)

        # Official names UpBlock1_1..UpBlock1_R keep checkpoint keys interchangeable.
        for i in range(1, n_res + 1):
            setattr(self, f"UpBlock1_{i}", ResnetAdaILNBlock(width))

        decoder: list[nn.Module] = []
        for mult in (4, 2):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                        nn.Conv2d(ch * mult, ch * mult // 2, 3, 1, 0, bias=False),
                        ILN(ch * mult // 2), nn.ReLU(True)]
        decoder += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7, 1, 0, bias=False), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*decoder)

    def bottleneck_blocks(self) -> list[ResnetAdaILNBlock]:
        return [getattr(self, f"UpBlock1_{i}") for i in range(1, self.n_res + 1)]

    def memory_blocks(self) -> list[nn.Module]:
        """What ``--memory lean`` recomputes (training/memory.py): encoder, bottleneck blocks, decoder."""
        return [self.DownBlock, *self.bottleneck_blocks(), self.UpBlock2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.DownBlock(x)
        x, cam_logit, heatmap = cam_attention(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.relu,
                                              weight_of=lambda fc: fc.weight)
        z = nn.functional.adaptive_avg_pool2d(x, 1) if self.light else x
        z = self.FC(z.reshape(z.shape[0], -1))  # reshape: also valid for channels_last
        gamma, beta = self.gamma(z), self.beta(z)
        for block in self.bottleneck_blocks():
            x = block(x, gamma, beta)
        return self.UpBlock2(x), cam_logit, heatmap


class Discriminator(nn.Module):
    """Spectral-normalised PatchGAN with a CAM head; ``n_layers`` 7 is the global D, 5 the local.

    ``n_layers`` counts as the official code does: ``n_layers − 2`` stride-2 4×4 convs, one
    stride-1 4×4 conv (shrinks the map by one), then the CAM head and a stride-1 logit conv.
    ``fix_cam_weight`` scales the CAM features with the spectrally normalised weight the logits
    use; the official code (default) scales with the raw ``weight_orig``.
    Returns ``(logit map, cam_logit, heatmap)``.
    """

    def __init__(self, in_ch: int = 3, ch: int = 64, n_layers: int = 5, fix_cam_weight: bool = False):
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"a discriminator needs n_layers >= 3, got {n_layers}")
        self.fix_cam_weight = fix_cam_weight
        model = [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(in_ch, ch, 4, 2, 0, bias=True)),
                 nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers - 2):
            mult = 2 ** (i - 1)
            model += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch * mult, ch * mult * 2, 4, 2, 0, bias=True)),
                      nn.LeakyReLU(0.2, True)]
        mult = 2 ** (n_layers - 3)
        model += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch * mult, ch * mult * 2, 4, 1, 0, bias=True)),
                  nn.LeakyReLU(0.2, True)]
        width = ch * mult * 2

        self.gap_fc = spectral_norm(nn.Linear(width, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(width, 1, bias=False))
        self.conv1x1 = nn.Conv2d(width * 2, width, 1, 1, bias=True)
        self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = spectral_norm(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        self.model = nn.Sequential(*model)

    def memory_blocks(self) -> list[nn.Module]:
        """What ``--memory lean`` recomputes (training/memory.py): the whole forward, below the
        network's spectral-norm pre-hook."""
        return [self]

    def _cam_weight(self, fc: nn.Module) -> torch.Tensor:
        return fc.weight if self.fix_cam_weight else fc.weight_orig

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.model(x)
        x, cam_logit, heatmap = cam_attention(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.leaky_relu,
                                              weight_of=self._cam_weight)
        return self.conv(self.pad(x)), cam_logit, heatmap


def build_generator(arch: UGATITArch) -> ResnetGenerator:
    return ResnetGenerator(arch.img_ch, arch.img_ch, arch.ch, arch.n_res, arch.img_size, arch.light)


def build_ugatit(arch: UGATITArch,
                 generator: Callable[[UGATITArch], nn.Module] = build_generator) -> dict[str, nn.Module]:
    """The six networks, created in the official order (genA2B, genB2A, disGA, disGB, disLA, disLB).

    ``generator`` builds the two generators; photo2cartoon passes its own and keeps these discriminators.
    """
    def discriminator(n_layers: int) -> Discriminator:
        return Discriminator(arch.img_ch, arch.ch, n_layers, arch.fix_d_cam_weight)

    return {
        "genA2B": generator(arch),
        "genB2A": generator(arch),
        "disGA": discriminator(arch.global_layers),
        "disGB": discriminator(arch.global_layers),
        "disLA": discriminator(arch.local_layers),
        "disLB": discriminator(arch.local_layers),
    }
