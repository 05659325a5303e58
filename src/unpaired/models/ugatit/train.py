"""One U-GAT-IT training iteration, as the official ``UGATIT.train()`` does it.

Order, losses, weights, optimiser settings and the ρ clipping are the official ones; the
loss names are the official variable names (they are what the logs and the parity tests show).
Three changes cost nothing in numbers (verified against the parity fixtures, bit for bit):
the discriminator step sees detached fakes (official: back-propagates through both generators
and throws the result away), the discriminators are frozen during the generator backward
(official: fills D grads that the next step zeroes), and the generator step reuses the fakes
computed for the discriminator step instead of recomputing them (same weights, same values).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from ...nn import clip_rho
from ...training.contracts import StepResult
from ...training.memory import release_gradients
from .options import UGATITOptions

ADAM_BETAS = (0.5, 0.999)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def official_lr(step: int, lr0: float, iters: int, decay: bool = True) -> float:
    """Learning rate used at 1-based ``step``, by the official repeated float subtraction.

    A closed form differs in the last bits (and the official last step is slightly negative),
    so we replay the subtraction; it runs only when a schedule is (re)built, not per step.
    A run of one iteration has no second half to decay over (the official code divides by zero).
    """
    lr = lr0
    half = iters // 2
    if decay and half:
        for _ in range(half + 1, step + 1):
            lr -= lr0 / half
    return lr


def _mse_to(x: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(x, torch.full_like(x, target))


def _bce_to(x: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


class UGATITTrainer:
    """Holds the six networks and two Adam optimisers; ``step()`` runs one D update then one G update.

    ``nets`` may hold wrapped modules (DistributedDataParallel, compiled); ``raw`` must then hold
    the plain modules, used for ρ clipping, freezing, the frozen-D forwards of the G step and
    checkpoints. Speed options of ``opts`` that are still unresolved (``precision="auto"``,
    ``fused_adam=None``: see ``training/speed.py``) run the faithful way (fp32, default Adam).
    ``opts.memory`` "lean" frees each optimiser's gradients after its step (``training/memory.py``).
    """

    def __init__(self, nets: dict[str, nn.Module], opts: UGATITOptions, raw: dict[str, nn.Module] | None = None):
        self.nets = nets
        self.raw = raw or nets
        self.opts = opts
        gens = [p for n in ("genA2B", "genB2A") for p in self.raw[n].parameters()]
        dis = [p for n in ("disGA", "disGB", "disLA", "disLB") for p in self.raw[n].parameters()]
        # fused_adam: one kernel for all parameters (not bit-identical to the default per-tensor path).
        adam = {"lr": opts.lr, "betas": ADAM_BETAS, "weight_decay": opts.weight_decay, "fused": opts.fused_adam or None}
        self.G_optim = torch.optim.Adam(gens, **adam)
        self.D_optim = torch.optim.Adam(dis, **adam)
        device_type = next(iter(self.raw.values())).parameters().__next__().device.type
        self._autocast_dtype = AUTOCAST_DTYPES.get(opts.precision)
        self._device_type = device_type
        self.scaler = torch.amp.GradScaler(device_type, enabled=opts.precision == "fp16")
        self.lean = opts.memory == "lean"

    # -- schedule -------------------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for optim in (self.G_optim, self.D_optim):
            optim.param_groups[0]["lr"] = lr

    @property
    def lr(self) -> float:
        return self.G_optim.param_groups[0]["lr"]

    def begin_step(self, step: int) -> None:
        """Official per-step decay, applied at the start of 1-based ``step``."""
        half = self.opts.iters // 2
        if self.opts.decay_flag and half and step > half:  # one iteration: no second half (see official_lr)
            for optim in (self.G_optim, self.D_optim):
                optim.param_groups[0]["lr"] -= self.opts.lr / half

    # -- one iteration --------------------------------------------------------------------
    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device_type, dtype=self._autocast_dtype)

    def _judge(self, prefix: str, image: torch.Tensor, domain: str, nets: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """Global and local D of ``domain`` on ``image`` (one train-mode call each, SN advances)."""
        out = {}
        for scale in ("G", "L"):
            logit, cam_logit, _ = nets[f"dis{scale}{domain}"](image)
            out[f"{prefix}_{scale}{domain}_logit"] = logit.float()
            out[f"{prefix}_{scale}{domain}_cam_logit"] = cam_logit.float()
        return out

    def _discriminator_losses(self, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.opts.adv_weight
        losses = {}
        for domain in ("A", "B"):
            for key in (f"G{domain}", f"L{domain}"):
                losses[f"D_ad_loss_{key}"] = _mse_to(d[f"real_{key}_logit"], 1.0) + _mse_to(d[f"fake_{key}_logit"], 0.0)
                losses[f"D_ad_cam_loss_{key}"] = (_mse_to(d[f"real_{key}_cam_logit"], 1.0)
                                                  + _mse_to(d[f"fake_{key}_cam_logit"], 0.0))
        for domain in ("A", "B"):
            g, l = f"G{domain}", f"L{domain}"
            losses[f"D_loss_{domain}"] = w * (losses[f"D_ad_loss_{g}"] + losses[f"D_ad_cam_loss_{g}"]
                                              + losses[f"D_ad_loss_{l}"] + losses[f"D_ad_cam_loss_{l}"])
        losses["Discriminator_loss"] = losses["D_loss_A"] + losses["D_loss_B"]
        return losses

    def _generator_losses(self, real: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official G losses. Domain X's terms are those where the X-producing generator is trained."""
        opts = self.opts
        losses = {}
        for domain in ("A", "B"):
            for key in (f"G{domain}", f"L{domain}"):
                losses[f"G_ad_loss_{key}"] = _mse_to(tensors[f"fake_{key}_logit"], 1.0)
                losses[f"G_ad_cam_loss_{key}"] = _mse_to(tensors[f"fake_{key}_cam_logit"], 1.0)
        for x, y in (("A", "B"), ("B", "A")):
            losses[f"G_recon_loss_{x}"] = F.l1_loss(tensors[f"fake_{x}2{y}2{x}"], real[x])
            losses[f"G_identity_loss_{x}"] = F.l1_loss(tensors[f"fake_{x}2{x}"], real[x])
            losses[f"G_cam_loss_{x}"] = (_bce_to(tensors[f"fake_{y}2{x}_cam_logit"], 1.0)
                                         + _bce_to(tensors[f"fake_{x}2{x}_cam_logit"], 0.0))
        for x in ("A", "B"):
            g, l = f"G{x}", f"L{x}"
            losses[f"G_loss_{x}"] = (opts.adv_weight * (losses[f"G_ad_loss_{g}"] + losses[f"G_ad_cam_loss_{g}"]
                                                      + losses[f"G_ad_loss_{l}"] + losses[f"G_ad_cam_loss_{l}"])
                                     + opts.cycle_weight * losses[f"G_recon_loss_{x}"]
                                     + opts.identity_weight * losses[f"G_identity_loss_{x}"]
                                     + opts.cam_weight * losses[f"G_cam_loss_{x}"])
        losses["Generator_loss"] = losses["G_loss_A"] + losses["G_loss_B"]
        return losses

    def _set_discriminators_trainable(self, trainable: bool) -> None:
        for name in ("disGA", "disGB", "disLA", "disLB"):
            self.raw[name].requires_grad_(trainable)

    def make_fakes(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """Translate both batches once; the D step uses them detached, the G step with their graph."""
        with self._autocast():
            fake_A2B, fake_A2B_cam_logit, _ = self.nets["genA2B"](real_A)
            fake_B2A, fake_B2A_cam_logit, _ = self.nets["genB2A"](real_B)
        return {"real_A": real_A, "real_B": real_B, "fake_A2B": fake_A2B, "fake_B2A": fake_B2A,
                "fake_A2B_cam_logit": fake_A2B_cam_logit.float(), "fake_B2A_cam_logit": fake_B2A_cam_logit.float()}

    def discriminator_step(self, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """D update on real and detached fake images: real first, then fake, per D (SN advances)."""
        self.D_optim.zero_grad()
        with self._autocast():
            d_out = {**self._judge("real", tensors["real_A"], "A", self.nets),
                     **self._judge("real", tensors["real_B"], "B", self.nets),
                     **self._judge("fake", tensors["fake_B2A"].detach(), "A", self.nets),
                     **self._judge("fake", tensors["fake_A2B"].detach(), "B", self.nets)}
        losses = self._discriminator_losses(d_out)
        self.scaler.scale(losses["Discriminator_loss"]).backward()
        self.scaler.step(self.D_optim)
        if self.lean:
            release_gradients(self.D_optim)
        return losses, d_out

    def generator_step(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """G update against the freshly updated, frozen discriminators, then ρ clipping.

        Adds the cycle, identity and D-on-fake outputs to ``tensors``.
        """
        nets = self.nets
        self.G_optim.zero_grad()
        self._set_discriminators_trainable(False)
        try:
            with self._autocast():
                tensors["fake_A2B2A"] = nets["genB2A"](tensors["fake_A2B"])[0]
                tensors["fake_B2A2B"] = nets["genA2B"](tensors["fake_B2A"])[0]
                tensors["fake_A2A"], cam_A2A, _ = nets["genB2A"](tensors["real_A"])
                tensors["fake_B2B"], cam_B2B, _ = nets["genA2B"](tensors["real_B"])
                # The frozen Ds run unwrapped: under DDP a wrapped D would wait for grads it never gets.
                tensors.update(self._judge("fake", tensors["fake_B2A"], "A", self.raw))
                tensors.update(self._judge("fake", tensors["fake_A2B"], "B", self.raw))
            tensors["fake_A2A_cam_logit"], tensors["fake_B2B_cam_logit"] = cam_A2A.float(), cam_B2B.float()
            for key in ("fake_A2B", "fake_B2A", "fake_A2B2A", "fake_B2A2B", "fake_A2A", "fake_B2B"):
                tensors[key] = tensors[key].float()
            losses = self._generator_losses({"A": tensors["real_A"], "B": tensors["real_B"]}, tensors)
            self.scaler.scale(losses["Generator_loss"]).backward()
        finally:
            self._set_discriminators_trainable(True)
        self.scaler.step(self.G_optim)
        self.scaler.update()
        if self.lean:
            release_gradients(self.G_optim)
        clip_rho(self.raw["genA2B"])
        clip_rho(self.raw["genB2A"])
        return losses

    def step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> StepResult:
        """One official iteration: D update, G update, ρ clipping (after ``begin_step`` set the lr)."""
        tensors = self.make_fakes(real_A, real_B)
        d_losses, _ = self.discriminator_step(tensors)
        g_losses = self.generator_step(tensors)
        losses = {k: v.detach() for k, v in {**d_losses, **g_losses}.items()}
        return StepResult(losses)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"G_optim": self.G_optim.state_dict(), "D_optim": self.D_optim.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G_optim.load_state_dict(state["G_optim"])
        self.D_optim.load_state_dict(state["D_optim"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
