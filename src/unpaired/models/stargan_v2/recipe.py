"""What the training loop asks of StarGAN v2: DIR/train/<domain>, DIR/val/<domain>; the EMA
networks sample the grids."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import UserError
from ...training import speed
from .data import MultiDomainData, StarGANv2Stream, open_multidomain, val_batch
from .fan import load_fan
from .networks import build_stargan_v2, ema_nets
from .options import StarGANv2Options, validate
from .train import StarGANv2Trainer, latent_grid, reference_grid

# Speed options StarGAN v2 does not implement (yet), and why.
UNSUPPORTED_SPEED = {"precision": "its R1 penalty's double backward is not verified under autocast; it trains in fp32",
                     "sn_outputs": "it has no spectral norm"}


class StarGANv2Recipe:
    progress_keys = ("D/latent_real", "G/latent_adv")
    supports_distributed = False  # the R1 double backward under DDP is not verified yet

    def prepare(self, opts: StarGANv2Options) -> tuple[StarGANv2Options, list[str]]:
        validate(opts)
        return opts, []

    def open_data(self, opts: StarGANv2Options) -> tuple[MultiDomainData, StarGANv2Options]:
        """The data, and the options with its domain names (a resumed run must find the same)."""
        data = open_multidomain(Path(opts.data), opts.arch.img_size, opts.randcrop_prob)
        if opts.arch.domains and tuple(opts.arch.domains) != tuple(data.domains):
            raise UserError(f"the run was trained on domains {list(opts.arch.domains)}, but {opts.data} holds "
                            f"{list(data.domains)}")
        opts = dataclasses.replace(opts, arch=dataclasses.replace(opts.arch, domains=tuple(data.domains)))
        opts.arch.check()
        return data, opts

    def build_nets(self, opts: StarGANv2Options) -> dict[str, nn.Module]:
        return build_stargan_v2(opts.arch, opts.seed, opts.ema_init)

    def resolve_speed(self, opts: StarGANv2Options, device: torch.device) -> StarGANv2Options:
        """Unset options compute the official way (no fast path is measured for StarGAN v2 yet);
        fused Adam, compiling and channels_last can be asked for."""
        return speed.resolve_speed(opts, device, speed.official_settings, UNSUPPORTED_SPEED)

    def accelerate(self, nets: dict[str, nn.Module], opts: StarGANv2Options, device: torch.device) -> None:
        speed.accelerate(nets, opts, device)

    def make_trainer(self, nets: dict[str, nn.Module], opts: StarGANv2Options, raw: dict[str, nn.Module]):
        fan = None
        if opts.arch.w_hpf > 0:
            device = next(raw["generator"].parameters()).device
            fan = load_fan(opts.fan_weights).to(device).eval()
        return StarGANv2Trainer(nets, opts, fan=fan, raw=raw)

    def batches(self, data: MultiDomainData, opts: StarGANv2Options, start: int, rank: int, world_size: int,
                workers: int, device: torch.device) -> Iterator[tuple]:
        stream = StarGANv2Stream(data, opts.batch_size, opts.arch.latent_dim, opts.seed, start_batch=start,
                                 rank=rank, world_size=world_size, num_workers=workers,
                                 pin_memory=device.type == "cuda")
        for batch in stream:
            yield (batch.to(device, non_blocking=True),)

    def grids(self, data: MultiDomainData, opts: StarGANv2Options, device: torch.device) -> StarGANv2Grids:
        return StarGANv2Grids(data, opts, device)

    def scalars(self, nets: Mapping[str, nn.Module]) -> dict[str, float]:
        return {}

    def evaluation(self, opts: StarGANv2Options, device: torch.device) -> None:
        return None  # StarGAN v2's FID/LPIPS protocol is not wired into training yet

    def reschedule(self, trainer: StarGANv2Trainer, opts: StarGANv2Options, step: int) -> str:
        return "learning rates are constant; λ_ds follows its own ds_iter schedule"


class StarGANv2Grids:
    """Latent-guided rows per domain and the reference grid, from a fixed validation batch."""

    def __init__(self, data: MultiDomainData, opts: StarGANv2Options, device: torch.device):
        count = min(opts.val_batch_size, 8)
        self.x, self.y = (t.to(device) for t in val_batch(data, count))
        generator = torch.Generator().manual_seed(opts.seed)
        self.latents = torch.randn(3, opts.arch.latent_dim, generator=generator).to(device)
        self.num_domains = opts.arch.num_domains

    @torch.no_grad()
    def render(self, nets: Mapping[str, nn.Module]) -> dict[str, np.ndarray]:
        ema = ema_nets(nets)
        return {"latent": latent_grid(ema, self.x, self.num_domains, self.latents),
                "reference": reference_grid(ema, self.x, self.x, self.y)}
