"""The training iteration of the official TF code (``UGATIT.build_model`` + ``UGATIT.train``).

Each iteration is TF's two ``sess.run`` calls: the D step (update of both discriminators), then,
every ``n_critic`` iterations, the G step (both generators, then ρ clipped to [0, 1]). TF pulls a
new batch for each call; ``step(real_A, real_B, real_A_g, real_B_g)`` does too, and with the G
batch omitted both steps share one (what the parity fixtures replay). Loss names and the loss
composition are the TF code's (including ``G_A_cycle = cycle_weight · reconstruction_B``); the
L2 regularisation (``weight_decay · Σw²/2`` over kernels) is part of the losses, as in TF.

Work TF does that changes no number is skipped: the D step runs the generators without autograd
(TF differentiates only w.r.t. D variables anyway), the G step freezes the discriminators, and
with a shared batch the G step reuses the D step's translations. Each discriminator judges
``cat([real, fake])`` (and the gradient-penalty samples) in one call: in TF those are separate
calls, but every one of them starts its power iteration from the same stored ``u`` and writes
the same ``u'``, which is what one batched call does.

Randomness (gradient-penalty samples) comes from torch's global RNG on the networks' device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UserError
from ...training.contracts import StepResult
from ...training.memory import release_gradients
from .networks import DISCRIMINATOR_NAMES, GENERATOR_NAMES, DiscriminatorOutput, clip_rho_, regularized_kernels
from .options import GAN_TYPES

PENALISED = ("wgan-gp", "wgan-lp", "dragan")  # TF adds a gradient penalty for 'wgan*' and 'dragan'
ADAM_BETAS = (0.5, 0.999)
ADAM_EPS = 1e-8
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BRANCHES = ("local", "global")


def tf_lr(step: int, lr: float, iters: int, epoch_iters: int, decay_flag: bool, decay_epoch: int) -> float:
    """The learning rate of 1-based ``step``: TF's per-epoch schedule, a pure function of the step.

    Constant for epochs < ``decay_epoch``, then ``lr · (epochs − epoch) / (epochs − decay_epoch)``
    for the whole epoch (official: 100 epochs of 10 000 iterations, decay from epoch 50, the
    last epoch at lr/50, never 0). ``epochs = ceil(iters / epoch_iters)``; steps past the end
    keep the last epoch's rate. TF computes it in float64 and feeds it as float32; so do we
    (torch's optimiser keeps the Python float).
    """
    epochs = math.ceil(iters / epoch_iters)
    epoch = min((step - 1) // epoch_iters, epochs - 1)
    if not decay_flag or epoch < decay_epoch:
        return lr
    return lr * (epochs - epoch) / (epochs - decay_epoch)


# ----------------------------------------------------------------------------- losses (ops.py)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(gan_type: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """``ops.discriminator_loss`` for one branch's output on real and on fake images."""
    if gan_type.startswith("wgan"):
        return -real.mean() + fake.mean()
    if gan_type == "lsgan":
        return (real - 1.0).square().mean() + fake.square().mean()
    if gan_type in ("gan", "dragan"):
        return _bce(real, 1.0) + _bce(fake, 0.0)
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()  # hinge


def generator_loss(gan_type: str, fake: torch.Tensor) -> torch.Tensor:
    """``ops.generator_loss`` for one branch's output on fake images."""
    if gan_type.startswith("wgan") or gan_type == "hinge":
        return -fake.mean()
    if gan_type == "lsgan":
        return (fake - 1.0).square().mean()
    return _bce(fake, 1.0)  # gan, dragan


def cam_loss(source: torch.Tensor, non_source: torch.Tensor) -> torch.Tensor:
    """``ops.cam_loss``: the generator's CAM says "my domain" for translations, "not" for identities."""
    return _bce(source, 1.0) + _bce(non_source, 0.0)


def _branch_sum(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum(list)`` as TF's loss helpers do it: local, then global."""
    return values[0] + values[1]


def regularization(nets: Sequence[nn.Module], weight_decay: float) -> torch.Tensor:
    """``regularization_loss(scope)``: Σ over the side's kernels of ``l2_regularizer(wd)(w) = wd · Σw²/2``."""
    terms = [weight_decay * (w.float().square().sum() / 2) for net in nets for w in regularized_kernels(net)]
    return torch.stack(terms).sum()


def _tensors(prefix: str, out: DiscriminatorOutput) -> dict[str, torch.Tensor]:
    """Name one judgement's tensors as the parity fixtures do: ``{prefix}_{branch}_{logit|cam_logit}``."""
    named = {}
    for i, branch in enumerate(BRANCHES):
        named[f"{prefix}_{branch}_logit"] = out.logits[i].float()
        named[f"{prefix}_{branch}_cam_logit"] = out.cam_logits[i].float()
    return named


def _split(out: DiscriminatorOutput, sizes: Sequence[int]) -> list[DiscriminatorOutput]:
    """One batched judgement split back into the judgements of its parts (batches of ``sizes``)."""
    # pieces[field][branch][part]: every tensor of the output cut along the batch
    pieces = [[tensor.split(list(sizes)) for tensor in field] for field in out]
    return [DiscriminatorOutput(*(tuple(branch[part] for branch in field) for field in pieces))
            for part in range(len(sizes))]


# ----------------------------------------------------------------------------- trainer


class UGATITTFTrainer:
    """The four TF-style networks and their two Adam optimisers; ``step`` is one TF iteration.

    ``opts`` has attributes ``lr, weight_decay, adv_weight, cycle_weight, identity_weight,
    cam_weight, gan_type, gp_weight, n_critic, iters, epoch_iters, decay_flag, decay_epoch,
    fused_adam, precision`` (see the module docstring and ``tf_lr``). ``nets`` maps
    ``genA2B, genB2A, disA, disB`` to modules, possibly wrapped (DDP, compiled); ``raw`` then holds
    the plain modules, used for parameters, ρ clipping and the frozen discriminators of the G step.

    Adam: TF's update is ``var −= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`` while torch's divides by
    ``√v/√(1−β₂ᵗ) + ε``; the two agree when torch's ε is ``ε/√(1−β₂ᵗ)``, which we set before each
    update. Plain torch Adam is not close enough: at step 1 its ε is in effect 30× smaller, so
    parameters with small gradients move differently (measured on the fixtures: 2.4 % of lr
    where |g| ~ 1e-5, the README allows "a few percent"; ~lr instead of less where |g| ≲ 3e-7),
    and that changes the early-training dynamics of exactly those parameters. The exact form
    costs nothing and works with the fused kernel too.
    """

    def __init__(self, nets: dict[str, nn.Module], opts, raw: dict[str, nn.Module] | None = None):
        if opts.gan_type not in GAN_TYPES:
            raise UserError(f"gan_type must be one of {', '.join(GAN_TYPES)}, got {opts.gan_type!r}")
        if opts.n_critic < 1 or opts.epoch_iters < 1:
            raise UserError(f"n_critic and epoch_iters must be at least 1, got {opts.n_critic} and {opts.epoch_iters}")
        self.nets, self.raw, self.opts = nets, raw or nets, opts
        adam = {"lr": opts.lr, "betas": ADAM_BETAS, "eps": ADAM_EPS, "fused": opts.fused_adam or None}
        self.G_optim = torch.optim.Adam([p for n in GENERATOR_NAMES for p in self.raw[n].parameters()], **adam)
        self.D_optim = torch.optim.Adam([p for n in DISCRIMINATOR_NAMES for p in self.raw[n].parameters()], **adam)
        self._device_type = next(self.raw["genA2B"].parameters()).device.type
        self._autocast_dtype = AUTOCAST_DTYPES.get(opts.precision)
        self.scaler = torch.amp.GradScaler(self._device_type, enabled=opts.precision == "fp16")
        self._step = 1

    # -- schedule -------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.G_optim.param_groups[0]["lr"]

    def begin_step(self, step: int) -> None:
        """Prepare 1-based iteration ``step``: its learning rate, and whether it updates G."""
        o = self.opts
        for optim in (self.G_optim, self.D_optim):
            optim.param_groups[0]["lr"] = tf_lr(step, o.lr, o.iters, o.epoch_iters, o.decay_flag, o.decay_epoch)
        self._step = step

    def updates_generators(self, step: int) -> bool:
        """TF: ``if (counter - 1) % n_critic == 0`` with counter = the 1-based step."""
        return (step - 1) % self.opts.n_critic == 0

    # -- helpers --------------------------------------------------------------------------
    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device_type, dtype=self._autocast_dtype)

    def _adam_step(self, optim: torch.optim.Optimizer) -> None:
        """One Adam update with TF's ε placement (see the class docstring), then the ρ constraint."""
        states = [optim.state[p] for group in optim.param_groups for p in group["params"] if optim.state[p]]
        t = int(states[0]["step"]) + 1 if states else 1
        for group in optim.param_groups:
            group["eps"] = ADAM_EPS / math.sqrt(1.0 - ADAM_BETAS[1] ** t)
        self.scaler.step(optim)
        if self.opts.memory == "lean":
            release_gradients(optim)
        if optim is self.G_optim:
            for name in GENERATOR_NAMES:
                clip_rho_(self.raw[name])

    def translate(self, real_A: torch.Tensor, real_B: torch.Tensor, grad: bool) -> dict[str, torch.Tensor]:
        """``x_ab, cam_ab`` = genA2B(real_A) and ``x_ba, cam_ba`` = genB2A(real_B), with autograd or not."""
        with torch.set_grad_enabled(grad), self._autocast():
            x_ab, cam_ab, _ = self.nets["genA2B"](real_A)
            x_ba, cam_ba, _ = self.nets["genB2A"](real_B)
        return {"x_ab": x_ab.float(), "cam_ab": cam_ab.float(), "x_ba": x_ba.float(), "cam_ba": cam_ba.float()}

    def _penalty_samples(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``UGATIT.gradient_panalty``'s points: on the real-fake line (DRAGAN: real-noisy real)."""
        if self.opts.gan_type == "dragan":
            noise = torch.rand_like(real)
            fake = real + 0.5 * real.var(unbiased=False).sqrt() * noise
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
        return (real + alpha * (fake - real)).requires_grad_(True)

    def _gradient_penalty(self, outputs: Sequence[torch.Tensor], samples: torch.Tensor) -> torch.Tensor:
        """Σ over branches of ``GP_ld · mean((‖∇ₓ Σ output‖ − 1)²)`` (wgan-lp: only norms above 1)."""
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        terms = []
        for out in outputs:
            (grad,) = torch.autograd.grad(out.float().sum() * scale, samples, create_graph=True)
            excess = (grad / scale).flatten(1).norm(dim=1) - 1.0
            if self.opts.gan_type == "wgan-lp":
                excess = torch.clamp(excess, min=0.0)
            terms.append(self.opts.gp_weight * excess.square().mean())
        return _branch_sum(terms)

    # -- the two steps --------------------------------------------------------------------
    def _judge_domain(self, domain: str, real: torch.Tensor, fake: torch.Tensor) -> tuple[dict, dict]:
        """Discriminator ``domain`` on real and fake images (and penalty samples) in one call."""
        o = self.opts
        parts = [real, fake]
        if o.gan_type in PENALISED:
            parts.append(self._penalty_samples(real, fake))
        with self._autocast():
            judged = _split(self.nets[f"dis{domain}"](torch.cat(parts)), [p.shape[0] for p in parts])
        real_out, fake_out = judged[0], judged[1]
        losses = {
            f"D_ad_{domain}_logit": _branch_sum([discriminator_loss(o.gan_type, r.float(), f.float())
                                                 for r, f in zip(real_out.logits, fake_out.logits)]),
            f"D_ad_{domain}_cam": _branch_sum([discriminator_loss(o.gan_type, r.float(), f.float())
                                               for r, f in zip(real_out.cam_logits, fake_out.cam_logits)]),
        }
        total = losses[f"D_ad_{domain}_logit"] + losses[f"D_ad_{domain}_cam"]
        if o.gan_type in PENALISED:
            losses[f"GP_{domain}"] = self._gradient_penalty(judged[2].logits, parts[2])
            losses[f"GP_CAM_{domain}"] = self._gradient_penalty(judged[2].cam_logits, parts[2])
            total = total + losses[f"GP_{domain}"] + losses[f"GP_CAM_{domain}"]
        losses[f"D_{domain}_loss"] = o.adv_weight * total
        return losses, {**_tensors(f"D_{domain}_real", real_out), **_tensors(f"D_{domain}_fake", fake_out)}

    def discriminator_step(self, real_A: torch.Tensor, real_B: torch.Tensor,
                           fakes: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict]:
        """TF's D ``sess.run``: both discriminators on real and translated images, one Adam update.

        ``fakes`` (from ``translate``) reuses translations; they are used detached. Returns
        ``(losses, tensors)``, the tensors named as the fixtures (``x_ab``, ``D_A_real_local_logit``...).
        """
        fakes = fakes or self.translate(real_A, real_B, grad=False)
        x_ab, x_ba = fakes["x_ab"].detach(), fakes["x_ba"].detach()
        self.D_optim.zero_grad(set_to_none=True)
        losses_A, tensors_A = self._judge_domain("A", real_A, x_ba)
        losses_B, tensors_B = self._judge_domain("B", real_B, x_ab)
        losses = {**losses_A, **losses_B}
        losses["regularization_D"] = regularization([self.raw[n] for n in DISCRIMINATOR_NAMES], self.opts.weight_decay)
        losses["Discriminator_loss"] = losses["D_A_loss"] + losses["D_B_loss"] + losses["regularization_D"]
        self.scaler.scale(losses["Discriminator_loss"]).backward()
        self._adam_step(self.D_optim)
        return losses, {"x_ab": x_ab, "x_ba": x_ba, **tensors_A, **tensors_B}

    def _generator_losses(self, real: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        o = self.opts
        losses = {}
        for x in ("A", "B"):
            losses[f"G_ad_{x}_logit"] = _branch_sum([generator_loss(o.gan_type, t[f"D_{x}_fake_{b}_logit"])
                                                     for b in BRANCHES])
            losses[f"G_ad_{x}_cam"] = _branch_sum([generator_loss(o.gan_type, t[f"D_{x}_fake_{b}_cam_logit"])
                                                   for b in BRANCHES])
        for x, y in (("A", "B"), ("B", "A")):
            x_, y_ = x.lower(), y.lower()
            losses[f"reconstruction_{x}"] = F.l1_loss(t[f"x_{x_}{y_}{x_}"], real[x])
            losses[f"identity_{x}"] = F.l1_loss(t[f"x_{x_}{x_}"], real[x])
            losses[f"cam_{x}"] = cam_loss(t[f"cam_{y_}{x_}"], t[f"cam_{x_}{x_}"])
        for x, y in (("A", "B"), ("B", "A")):  # Generator_X: the terms where the X-producing generator is trained
            losses[f"G_{x}_gan"] = o.adv_weight * (losses[f"G_ad_{x}_logit"] + losses[f"G_ad_{x}_cam"])
            losses[f"G_{x}_cycle"] = o.cycle_weight * losses[f"reconstruction_{y}"]
            losses[f"G_{x}_identity"] = o.identity_weight * losses[f"identity_{x}"]
            losses[f"G_{x}_cam"] = o.cam_weight * losses[f"cam_{x}"]
            losses[f"G_{x}_loss"] = (losses[f"G_{x}_gan"] + losses[f"G_{x}_cycle"] + losses[f"G_{x}_identity"]
                                     + losses[f"G_{x}_cam"])
        losses["regularization_G"] = regularization([self.raw[n] for n in GENERATOR_NAMES], o.weight_decay)
        losses["Generator_loss"] = losses["G_A_loss"] + losses["G_B_loss"] + losses["regularization_G"]
        return losses

    def generator_step(self, real_A: torch.Tensor, real_B: torch.Tensor,
                       fakes: dict[str, torch.Tensor] | None = None) -> tuple[dict, dict]:
        """TF's G ``sess.run``: translations, cycles, identities, the (just updated, frozen)
        discriminators on the translations, one Adam update, ρ clipping.

        ``fakes`` must come from ``translate(..., grad=True)`` on these batches. Returns
        ``(losses, tensors)`` (``x_ab, x_aba, x_aa, cam_ab, D_A_fake_local_logit``...).
        """
        t = dict(fakes or self.translate(real_A, real_B, grad=True))
        self.G_optim.zero_grad(set_to_none=True)
        for name in DISCRIMINATOR_NAMES:
            self.raw[name].requires_grad_(False)
        try:
            with self._autocast():
                t["x_aba"] = self.nets["genB2A"](t["x_ab"])[0]
                t["x_bab"] = self.nets["genA2B"](t["x_ba"])[0]
                t["x_aa"], t["cam_aa"], _ = self.nets["genB2A"](real_A)
                t["x_bb"], t["cam_bb"], _ = self.nets["genA2B"](real_B)
                # Unwrapped: under DDP a wrapped D would wait for gradients it never gets.
                t.update(_tensors("D_A_fake", self.raw["disA"](t["x_ba"])))
                t.update(_tensors("D_B_fake", self.raw["disB"](t["x_ab"])))
            t = {k: v.float() for k, v in t.items()}
            losses = self._generator_losses({"A": real_A, "B": real_B}, t)
            self.scaler.scale(losses["Generator_loss"]).backward()
        finally:
            for name in DISCRIMINATOR_NAMES:
                self.raw[name].requires_grad_(True)
        self._adam_step(self.G_optim)
        return losses, t

    def step(self, real_A: torch.Tensor, real_B: torch.Tensor,
             real_A_g: torch.Tensor | None = None, real_B_g: torch.Tensor | None = None) -> StepResult:
        """One TF iteration (call ``begin_step`` first): D step on ``real_A, real_B``, then, if this
        step updates G, the G step on ``real_A_g, real_B_g`` (default: the same batch).

        The losses hold the D terms and, on G steps, the G terms.
        """
        if (real_A_g is None) != (real_B_g is None):
            raise ValueError("pass both G-step batches (real_A_g, real_B_g) or neither")
        with_g = self.updates_generators(self._step)
        shared = real_A_g is None
        fakes = self.translate(real_A, real_B, grad=with_g and shared)
        d_losses, _ = self.discriminator_step(real_A, real_B, fakes)
        losses = d_losses
        if with_g:
            g_losses, _ = (self.generator_step(real_A, real_B, fakes) if shared
                           else self.generator_step(real_A_g, real_B_g))
            losses = {**d_losses, **g_losses}
        self.scaler.update()
        self._step += 1
        return StepResult({k: v.detach() for k, v in losses.items()})

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"G_optim": self.G_optim.state_dict(), "D_optim": self.D_optim.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G_optim.load_state_dict(state["G_optim"])
        self.D_optim.load_state_dict(state["D_optim"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
