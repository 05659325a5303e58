"""StarGAN v2 training (Choi et al., CVPR 2020) as the official solver does it, and its sample grids.

One iteration is the official four updates: D with a latent-guided fake, D with a reference-guided
fake, G+F+E on the latent branch, G alone on the reference branch; then the EMA of G, F and E.
Losses: non-saturating adversarial loss, R1 penalty on real images, style reconstruction,
diversity sensitive (weight decayed linearly to 0 over ``ds_iter`` steps) and cycle loss.
The loss functions are pure, returning ``(loss, terms)`` with the official term names.

Changes that cost nothing in numbers: networks that an update does not step are frozen while
it runs (official: their gradients are computed, then zeroed before anyone reads them), and the
second diversity image is made without a graph (official: with one, then detached).
Deliberate changes: λ_ds is a function of the step, so resumed runs continue the decay (the
official resume restarts it at λ_ds) and it stops at exactly 0 (official repeated subtraction
can overshoot to about -λ_ds/ds_iter); the EMA nets start as copies of the initialised nets
(see ``networks``); loss terms are detached tensors, not floats, so a step never waits for the
GPU (the loop reads them only when it logs).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from ...training.contracts import StepResult
from ...training.memory import release_gradients
from ...viz import make_grid, to_uint8_image
from .data import StarGANv2Batch
from .fan import FAN, generate
from .networks import EMA_NETS, EMA_SUFFIX, TRAINED_NETS
from .options import StarGANv2Options

STYLE_AVERAGE_SAMPLES = 10_000  # z samples behind the mean style used for truncation (psi < 1)


# ----------------------------------------------------------------------------- losses


def adv_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Non-saturating GAN loss: binary cross-entropy of the logits against a constant 1 or 0."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def r1_reg(d_out: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    """Zero-centred gradient penalty 0.5 * E_batch[ sum_pixels (dD/dx)^2 ], kept differentiable."""
    grad, = torch.autograd.grad(d_out.sum(), x_in, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean(0)


def _target_style(nets: dict[str, nn.Module], y: torch.Tensor, z: torch.Tensor | None,
                  x_ref: torch.Tensor | None) -> torch.Tensor:
    """Style code of domain y from a latent code (mapping network) or a reference image (style encoder)."""
    if (z is None) == (x_ref is None):
        raise ValueError("give exactly one of a latent code and a reference image")
    return nets["mapping_network"](z, y) if z is not None else nets["style_encoder"](x_ref, y)


def compute_d_loss(nets: dict[str, nn.Module], x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor, *,
                   z_trg: torch.Tensor | None = None, x_ref: torch.Tensor | None = None,
                   masks: tuple[torch.Tensor, torch.Tensor] | None = None,
                   lambda_reg: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Discriminator loss on real images (with R1) and on one fake per source, latent- or reference-guided.

    Terms are detached scalars (``real``, ``fake``, ``reg``): read them when logging, not per step.
    """
    x_real = x_real.detach().requires_grad_()
    out = nets["discriminator"](x_real, y_org)
    loss_real = adv_loss(out, 1.0)
    loss_reg = r1_reg(out, x_real)
    with torch.no_grad():
        x_fake = nets["generator"](x_real, _target_style(nets, y_trg, z_trg, x_ref), masks=masks)
    loss_fake = adv_loss(nets["discriminator"](x_fake, y_trg), 0.0)
    loss = loss_real + loss_fake + lambda_reg * loss_reg
    return loss, {"real": loss_real.detach(), "fake": loss_fake.detach(), "reg": loss_reg.detach()}


def compute_g_loss(nets: dict[str, nn.Module], x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor, *,
                   z_trgs: tuple[torch.Tensor, torch.Tensor] | None = None,
                   x_refs: tuple[torch.Tensor, torch.Tensor] | None = None,
                   masks: tuple[torch.Tensor, torch.Tensor] | None = None, fan: FAN | None = None,
                   lambda_sty: float = 1.0, lambda_ds: float = 1.0,
                   lambda_cyc: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generator-side loss for two styles of domain y_trg (two latents or two references).

    adv + λ_sty·|E(G(x,s)) - s| - λ_ds·|G(x,s) - G(x,s2)| + λ_cyc·|G(G(x,s), E(x)) - x|, all L1 means.
    ``masks`` are the face masks of x_real; the cycle pass gets those of the fake from ``fan``.
    """
    if (z_trgs is None) == (x_refs is None):
        raise ValueError("give exactly one of two latent codes and two reference images")
    latent = z_trgs is not None
    first, second = z_trgs if latent else x_refs

    def style(code: torch.Tensor) -> torch.Tensor:
        return nets["mapping_network"](code, y_trg) if latent else nets["style_encoder"](code, y_trg)

    s_trg = style(first)
    x_fake = nets["generator"](x_real, s_trg, masks=masks)
    loss_adv = adv_loss(nets["discriminator"](x_fake, y_trg), 1.0)
    loss_sty = torch.mean(torch.abs(nets["style_encoder"](x_fake, y_trg) - s_trg))
    with torch.no_grad():
        x_fake2 = nets["generator"](x_real, style(second), masks=masks)
    loss_ds = torch.mean(torch.abs(x_fake - x_fake2))
    s_org = nets["style_encoder"](x_real, y_org)
    x_rec = generate(nets["generator"], x_fake, s_org, fan)
    loss_cyc = torch.mean(torch.abs(x_rec - x_real))
    loss = loss_adv + lambda_sty * loss_sty - lambda_ds * loss_ds + lambda_cyc * loss_cyc
    terms = {"adv": loss_adv, "sty": loss_sty, "ds": loss_ds, "cyc": loss_cyc}
    return loss, {name: value.detach() for name, value in terms.items()}


@torch.no_grad()
def moving_average(net: nn.Module, net_ema: nn.Module, beta: float = 0.999) -> None:
    """EMA update ``ema = beta * ema + (1 - beta) * param``, computed as the official ``lerp(param, ema, beta)``."""
    for param, param_ema in zip(net.parameters(), net_ema.parameters(), strict=True):
        param_ema.copy_(torch.lerp(param, param_ema, beta))


def ds_weight(step: int, lambda_ds: float, ds_iter: int) -> float:
    """λ_ds used at 1-based ``step``: lambda_ds at step 1, linearly down to 0 at step ds_iter + 1, then 0."""
    return lambda_ds * max(0.0, 1.0 - (step - 1) / ds_iter)


# ----------------------------------------------------------------------------- trainer


class StarGANv2Trainer:
    """Holds the networks, one Adam optimiser per trained network and the current λ_ds.

    ``nets`` holds ``networks.NET_NAMES`` (the four trained nets and the three EMA copies);
    ``fan`` (a loaded ``FAN``) is required when the generator uses face masks. ``raw`` holds the
    plain modules when ``nets`` are wrapped (compiled, DDP); freezing, EMA and optimisers use it.
    ``opts.fused_adam`` (resolved by training/speed.py; unset runs the official per-tensor loop)
    chooses Adam's fused kernel; ``opts.memory`` "lean" frees each optimiser's gradients after its
    step (training/memory.py).
    """

    def __init__(self, nets: dict[str, nn.Module], opts: StarGANv2Options, fan: FAN | None = None,
                 raw: dict[str, nn.Module] | None = None):
        if opts.arch.w_hpf > 0 and fan is None:
            raise UserError("--w-hpf > 0 needs the FAN for face masks: pass --fan-weights wing.ckpt")
        self.nets, self.raw, self.opts, self.fan = nets, raw or nets, opts, fan
        self.optims = {
            name: torch.optim.Adam(self.raw[name].parameters(), lr=opts.f_lr if name == "mapping_network" else opts.lr,
                                   betas=(opts.beta1, opts.beta2), weight_decay=opts.weight_decay,
                                   fused=opts.fused_adam or None)
            for name in TRAINED_NETS
        }
        self.lambda_ds = ds_weight(1, opts.lambda_ds, opts.ds_iter)
        self.lean = opts.memory == "lean"

    # -- schedule -------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """Learning rate of G, E and D (the mapping network uses opts.f_lr); constant in StarGAN v2."""
        return self.optims["generator"].param_groups[0]["lr"]

    def begin_step(self, step: int) -> None:
        """Called before 1-based ``step``: the learning rates stay; λ_ds follows the step (exact on resume)."""
        self.lambda_ds = ds_weight(step, self.opts.lambda_ds, self.opts.ds_iter)

    # -- one iteration --------------------------------------------------------------------
    def _update(self, names: Iterable[str], compute) -> dict[str, torch.Tensor]:
        """Run ``compute()`` with only ``names`` trainable, back-propagate its loss, step their optimisers."""
        names = tuple(names)
        frozen = [self.raw[name] for name in TRAINED_NETS if name not in names]
        for net in frozen:
            net.requires_grad_(False)
        try:
            for name in names:
                self.optims[name].zero_grad(set_to_none=True)
            loss, terms = compute()
            loss.backward()
        finally:
            for net in frozen:
                net.requires_grad_(True)
        for name in names:
            self.optims[name].step()
            if self.lean:
                release_gradients(self.optims[name])
        return terms

    def step(self, batch: StarGANv2Batch) -> StepResult:
        """One official iteration on a batch already on the device (after ``begin_step(step)``)."""
        opts, nets = self.opts, self.nets
        x_real, y_org, y_trg = batch.x_src, batch.y_src, batch.y_ref
        masks = self.fan.masks(x_real) if self.fan is not None else None
        losses: dict[str, torch.Tensor] = {}
        for branch, guide in (("latent", {"z_trg": batch.z_trg}), ("ref", {"x_ref": batch.x_ref})):
            terms = self._update(("discriminator",), lambda guide=guide: compute_d_loss(
                nets, x_real, y_org, y_trg, masks=masks, lambda_reg=opts.lambda_reg, **guide))
            losses.update({f"D/{branch}_{k}": v for k, v in terms.items()})
        g_branches = (("latent", {"z_trgs": (batch.z_trg, batch.z_trg2)},
                       ("generator", "mapping_network", "style_encoder")),
                      ("ref", {"x_refs": (batch.x_ref, batch.x_ref2)}, ("generator",)))
        for branch, guide, trained in g_branches:
            terms = self._update(trained, lambda guide=guide: compute_g_loss(
                nets, x_real, y_org, y_trg, masks=masks, fan=self.fan, lambda_sty=opts.lambda_sty,
                lambda_ds=self.lambda_ds, lambda_cyc=opts.lambda_cyc, **guide))
            losses.update({f"G/{branch}_{k}": v for k, v in terms.items()})
        for name in EMA_NETS:
            moving_average(self.raw[name], self.raw[name + EMA_SUFFIX], opts.ema_beta)
        losses["G/lambda_ds"] = torch.tensor(self.lambda_ds, device=x_real.device)
        return StepResult(losses)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optims": {name: optim.state_dict() for name, optim in self.optims.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, optim in self.optims.items():
            optim.load_state_dict(state["optims"][name])


# ----------------------------------------------------------------------------- sample grids


def _column(images: torch.Tensor) -> np.ndarray:
    """A batch [N,3,H,W] in [-1,1] as one uint8 column of N tiles."""
    return np.concatenate([to_uint8_image(image) for image in images], axis=0)


@torch.no_grad()
def style_average(mapping_network: nn.Module, domain: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    """Mean style code of ``domain`` over STYLE_AVERAGE_SAMPLES latents (the centre truncation pulls towards)."""
    device = next(mapping_network.parameters()).device
    z = torch.randn(STYLE_AVERAGE_SAMPLES, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.full((STYLE_AVERAGE_SAMPLES,), domain, dtype=torch.long, device=device)
    return mapping_network(z, y).mean(dim=0, keepdim=True)


@torch.no_grad()
def latent_grid(nets: dict[str, nn.Module], x_src: torch.Tensor, num_domains: int, latents: torch.Tensor,
                psi: float = 1.0, fan: FAN | None = None) -> np.ndarray:
    """Latent-guided synthesis: one row per source; the sources, then per domain one column per latent.

    ``nets`` maps generator and mapping_network (pass ``ema_nets(nets)``); ``latents`` [K, latent_dim]
    are shared by all sources and domains; ``psi`` < 1 pulls styles towards the domain's mean style
    (the official truncation trick). Returns an [N*H, (1 + D*K)*W, 3] uint8 image.
    """
    masks = fan.masks(x_src) if fan is not None else None
    n = x_src.size(0)
    latents = latents.to(x_src.device)
    columns = [_column(x_src)]
    for domain in range(num_domains):
        y = torch.full((n,), domain, dtype=torch.long, device=x_src.device)
        mean = style_average(nets["mapping_network"], domain, latents.size(1)) if psi != 1.0 else None
        for z in latents:
            s = nets["mapping_network"](z.expand(n, -1), y)
            if mean is not None:
                s = torch.lerp(mean, s, psi)
            columns.append(_column(nets["generator"](x_src, s, masks=masks)))
    return make_grid(columns)


@torch.no_grad()
def reference_grid(nets: dict[str, nn.Module], x_src: torch.Tensor, x_ref: torch.Tensor, y_ref: torch.Tensor,
                   fan: FAN | None = None) -> np.ndarray:
    """Reference-guided synthesis in the official layout: top row a blank tile then the sources;
    each further row a reference then every source translated with its style.

    ``nets`` maps generator and style_encoder (pass ``ema_nets(nets)``). Returns an
    [(1 + R)*H, (1 + N)*W, 3] uint8 image.
    """
    masks = fan.masks(x_src) if fan is not None else None
    n = x_src.size(0)
    styles = nets["style_encoder"](x_ref, y_ref)
    blank = torch.ones_like(x_src[:1])
    columns = [_column(torch.cat([blank, x_ref]))]
    fakes = [nets["generator"](x_src, s.expand(n, -1), masks=masks) for s in styles]  # R x [N,3,H,W]
    for j in range(n):
        columns.append(_column(torch.cat([x_src[j:j + 1]] + [fake[j:j + 1] for fake in fakes])))
    return make_grid(columns)
