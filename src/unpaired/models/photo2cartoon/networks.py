"""photo2cartoon generator (minivision-ai/photo2cartoon), U-GAT-IT's variant for face cartoons.

What differs from the U-GAT-IT generator: two hourglass blocks refine the full-resolution
features before the encoder down-samples and two more after the decoder up-samples (the last
one emits the image channels); the bottleneck's adaptive norms are Soft-AdaLIN, which blend
γ/β predicted from the *content* (pooled encoder features, deepest first) with γ/β predicted
from the *style* (the MLP on the attended features), with learned blend weights clipped to
[0, 1]; and the linear layers have biases. The discriminators are U-GAT-IT's.

Attribute names are the authors', so their released ``photo2cartoon_weights.pt`` loads (see
``official.py``). One deliberate difference: the authors' hourglass unit creates a 1×1
shortcut projection even when its input and output widths agree and then never uses it; we
create it only when it is used (unused parameters break DistributedDataParallel), and
``official_states`` drops those unused tensors. Forward and training steps match theirs bit
for bit; a seeded initialisation does not (their unused layers draw from the RNG too).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...nn import NORM_EPS, ILN, AdaILN, ResnetAdaILNBlock, ResnetBlock, cam_attention
from ..ugatit.networks import build_ugatit
from ..ugatit.options import UGATITArch
from .options import IMG_MULTIPLE, MIN_IMG_SIZE

SIDE_CH = 3  # width of an hourglass's side output (the authors' choice; not tied to the image)


class SoftAdaLIN(nn.Module):
    """AdaLIN whose γ, β blend a content and a style prediction: ``(1 − w)·style + w·content``.

    ``w_gamma``/``w_beta`` start at 0 (pure style, i.e. plain AdaLIN) and are clipped to [0, 1]
    after each generator step (``clip_blend_weights``).
    """

    def __init__(self, num_features: int, eps: float = NORM_EPS):
        super().__init__()
        self.norm = AdaILN(num_features, eps)
        self.w_gamma = nn.Parameter(torch.zeros(1, num_features))
        self.w_beta = nn.Parameter(torch.zeros(1, num_features))
        self.c_gamma = _mlp(num_features)
        self.c_beta = _mlp(num_features)
        self.s_gamma = nn.Linear(num_features, num_features)
        self.s_beta = nn.Linear(num_features, num_features)

    def forward(self, x: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        gamma = _blend(self.w_gamma, self.s_gamma(style), self.c_gamma(content))
        beta = _blend(self.w_beta, self.s_beta(style), self.c_beta(content))
        return self.norm(x, gamma, beta)


def _mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(True), nn.Linear(width, width))


def _blend(w: torch.Tensor, style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    w = w.expand(style.shape[0], -1)  # one expand feeding both terms: gradients sum as in the authors' graph
    return (1.0 - w) * style + w * content


def clip_blend_weights(module: nn.Module, low: float = 0.0, high: float = 1.0) -> None:
    """Clamp every SoftAdaLIN blend weight in place (the authors' WClipper, run after each G step)."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, SoftAdaLIN):
                sub.w_gamma.clamp_(low, high)
                sub.w_beta.clamp_(low, high)


def _pre_activation(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """IN → ReLU → (reflection pad) → bias-free conv, the order of the hourglass unit."""
    pad = [nn.ReflectionPad2d(kernel // 2)] if kernel > 1 else []
    return nn.Sequential(nn.InstanceNorm2d(in_ch), nn.ReLU(True), *pad,
                         nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=1, bias=False))


class ConvBlock(nn.Module):
    """Hourglass unit (Bulat & Tzimiropoulos' hierarchical block): three pre-activation 3×3 convs
    of widths out/2, out/4, out/4, concatenated, plus the input (projected by a 1×1 pre-activation
    conv, ``ConvBlock4``, only when the widths differ)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        if dim_out % 4:
            raise ValueError(f"ConvBlock width must be a multiple of 4, got {dim_out}")
        self.ConvBlock1 = _pre_activation(dim_in, dim_out // 2, 3)
        self.ConvBlock2 = _pre_activation(dim_out // 2, dim_out // 4, 3)
        self.ConvBlock3 = _pre_activation(dim_out // 4, dim_out // 4, 3)
        self.ConvBlock4 = _pre_activation(dim_in, dim_out, 1) if dim_in != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.ConvBlock1(x)
        x2 = self.ConvBlock2(x1)
        x3 = self.ConvBlock3(x2)
        residual = x if self.ConvBlock4 is None else self.ConvBlock4(x)
        return residual + torch.cat((x1, x2, x3), 1)


class HourGlassBlock(nn.Module):
    """Four-level hourglass: at each level a skip unit and an average-pool-then-unit on the way
    down, a unit at the centre, and unit → nearest 2× up-sampling → add the skip on the way up.

    The unit names are the authors': ``ConvBlock{level}_1`` skip, ``ConvBlock{level}_2`` down,
    ``ConvBlock5`` centre, ``ConvBlock6..9`` up (deepest first).
    """

    def __init__(self, dim: int):
        super().__init__()
        for name in ("1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "4_1", "4_2", "5", "6", "7", "8", "9"):
            setattr(self, f"ConvBlock{name}", ConvBlock(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for skip_unit, down_unit in ((self.ConvBlock1_1, self.ConvBlock1_2), (self.ConvBlock2_1, self.ConvBlock2_2),
                                     (self.ConvBlock3_1, self.ConvBlock3_2), (self.ConvBlock4_1, self.ConvBlock4_2)):
            skips.append(skip_unit(x))
            x = down_unit(F.avg_pool2d(x, 2))
        x = self.ConvBlock5(x)
        for up_unit, skip in zip((self.ConvBlock6, self.ConvBlock7, self.ConvBlock8, self.ConvBlock9), reversed(skips)):
            x = skip + F.interpolate(up_unit(x), scale_factor=2, mode="nearest")
        return x


class HourGlass(nn.Module):
    """Hourglass stage: ``HG`` (hourglass, unit, 1×1 conv, IN, ReLU) and a ``side_ch``-wide 1×1 side
    output ``Conv1``. With ``use_res`` it returns ``x + Conv2(features) + Conv3(side)`` (a stacked-
    hourglass intermediate stage); without, the side output itself (the generator's last stage).
    """

    def __init__(self, dim: int, use_res: bool = True, side_ch: int = SIDE_CH):
        super().__init__()
        self.use_res = use_res
        self.HG = nn.Sequential(HourGlassBlock(dim), ConvBlock(dim, dim),
                                nn.Conv2d(dim, dim, kernel_size=1, stride=1, bias=False),
                                nn.InstanceNorm2d(dim), nn.ReLU(True))
        self.Conv1 = nn.Conv2d(dim, side_ch, kernel_size=1, stride=1)
        if use_res:
            self.Conv2 = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
            self.Conv3 = nn.Conv2d(side_ch, dim, kernel_size=1, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.HG(x)
        side = self.Conv1(features)
        if not self.use_res:
            return side
        return x + self.Conv2(features) + self.Conv3(side)


def _down(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(in_ch, out_ch, 3, 2, 0, bias=False),
                         nn.InstanceNorm2d(out_ch), nn.ReLU(True))


def _up(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                         nn.Conv2d(in_ch, out_ch, 3, 1, 0, bias=False), ILN(out_ch), nn.ReLU(True))


class Photo2CartoonGenerator(nn.Module):
    """Stem → 2 hourglasses → 2 down-samplings → ``n_res`` residual blocks → CAM attention →
    style MLP → ``n_res`` Soft-AdaLIN blocks → 2 LIN up-samplings → 2 hourglasses → 7×7 conv, tanh.

    Decoder block ``i`` takes the content features pooled after encoder block ``n_res + 1 − i``
    (as the authors do; these vectors are equal up to rounding, because every encoder block adds
    an instance-normalised, zero-mean residual, so the content is in effect one pooled vector).
    ``img_size`` must be a multiple of 16 and at least 32 (the hourglasses pool four times);
    only the full (not ``light``) variant is tied to it. Returns ``(image, cam_logit, heatmap)``.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, ch: int = 32, n_res: int = 4,
                 img_size: int = 256, light: bool = True):
        super().__init__()
        if img_size % IMG_MULTIPLE or img_size < MIN_IMG_SIZE:
            raise ValueError(f"img_size must be a multiple of {IMG_MULTIPLE} and at least {MIN_IMG_SIZE}, "
                             f"got {img_size}")
        self.light = light
        self.n_res = n_res
        width = ch * 4
        self.ConvBlock1 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ch, 7, 1, 0, bias=False),
                                        nn.InstanceNorm2d(ch), nn.ReLU(True))
        self.HourGlass1 = HourGlass(ch)
        self.HourGlass2 = HourGlass(ch)
        self.DownBlock1 = _down(ch, ch * 2)
        self.DownBlock2 = _down(ch * 2, width)
        for i in range(1, n_res + 1):
            setattr(self, f"EncodeBlock{i}", ResnetBlock(width))

        self.gap_fc = nn.Linear(width, 1)
        self.gmp_fc = nn.Linear(width, 1)
        self.conv1x1 = nn.Conv2d(width * 2, width, kernel_size=1, stride=1)
        self.relu = nn.ReLU(True)
        mlp_in = width if light else (img_size // 4) ** 2 * width
        self.FC = nn.Sequential(nn.Linear(mlp_in, width), nn.ReLU(True), nn.Linear(width, width), nn.ReLU(True))

        for i in range(1, n_res + 1):
            setattr(self, f"DecodeBlock{i}", ResnetAdaILNBlock(width, norm=SoftAdaLIN))
        self.UpBlock1 = _up(width, ch * 2)
        self.UpBlock2 = _up(ch * 2, ch)
        self.HourGlass3 = HourGlass(ch)
        self.HourGlass4 = HourGlass(ch, use_res=False, side_ch=out_ch)
        self.ConvBlock2 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(out_ch, out_ch, 7, 1, 0, bias=False),
                                        nn.Tanh())

    def encoder_blocks(self) -> list[ResnetBlock]:
        return [getattr(self, f"EncodeBlock{i}") for i in range(1, self.n_res + 1)]

    def decoder_blocks(self) -> list[ResnetAdaILNBlock]:
        return [getattr(self, f"DecodeBlock{i}") for i in range(1, self.n_res + 1)]

    def memory_blocks(self) -> list[nn.Module]:
        """What ``--memory lean`` recomputes (training/memory.py): every stage but the CAM head and MLP."""
        return [self.ConvBlock1, self.HourGlass1, self.HourGlass2, self.DownBlock1, self.DownBlock2,
                *self.encoder_blocks(), *self.decoder_blocks(), self.UpBlock1, self.UpBlock2, self.HourGlass3,
                self.HourGlass4, self.ConvBlock2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.HourGlass2(self.HourGlass1(self.ConvBlock1(x)))
        x = self.DownBlock2(self.DownBlock1(x))
        content = []
        for block in self.encoder_blocks():
            x = block(x)
            content.append(F.adaptive_avg_pool2d(x, 1).view(x.shape[0], -1))
        x, cam_logit, heatmap = cam_attention(x, self.gap_fc, self.gmp_fc, self.conv1x1, self.relu,
                                              weight_of=lambda fc: fc.weight)
        z = F.adaptive_avg_pool2d(x, 1) if self.light else x
        style = self.FC(z.view(z.shape[0], -1))
        for block, content_features in zip(self.decoder_blocks(), reversed(content)):
            x = block(x, content_features, style)
        x = self.HourGlass4(self.HourGlass3(self.UpBlock2(self.UpBlock1(x))))
        return self.ConvBlock2(x), cam_logit, heatmap


def build_generator(arch: UGATITArch) -> Photo2CartoonGenerator:
    return Photo2CartoonGenerator(arch.img_ch, arch.img_ch, arch.ch, arch.n_res, arch.img_size, arch.light)


def build_photo2cartoon(arch: UGATITArch) -> dict[str, nn.Module]:
    """The six networks: photo2cartoon generators, U-GAT-IT discriminators (the authors keep
    U-GAT-IT's hard-wired depths 7 and 5, i.e. ``n_dis`` 6), created in the authors' order."""
    return build_ugatit(arch, generator=build_generator)
