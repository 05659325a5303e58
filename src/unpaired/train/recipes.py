"""What the training loop needs to know about each model, one recipe per model.

``train/loop.py`` is the same for every model (run directory, resume, logs, checkpoints,
DDP); a recipe answers the model-specific questions: which config class, how to open the
data, build the networks and the trainer, feed batches to ``trainer.step``, draw sample
grids and which extra scalars to log. Adding a model = adding a recipe to ``RECIPES``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError


class TwoDomainGrids:
    """Official 7-row sample grids over a fixed set of train and test images per domain.

    The official code steals fresh training batches for every grid; fixed images (with a fixed
    augmentation seed) make grids comparable across steps and leave the training stream alone.
    """

    def __init__(self, data, n: int, device: torch.device):
        def pick(dataset, count):
            idx = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
            items = [dataset[(int(i), 0)] for i in idx]
            return torch.stack([x[0] if isinstance(x, tuple) else x for x in items]).to(device)

        self.real = {"A": torch.cat([pick(data.train_a, n), pick(data.test_a, n)]),
                     "B": torch.cat([pick(data.train_b, n), pick(data.test_b, n)])}

    @torch.no_grad()
    def render(self, nets: dict[str, nn.Module]) -> dict[str, np.ndarray]:
        from ..viz import make_grid, sample_column

        gens = [nets["genA2B"], nets["genB2A"]]
        for gen in gens:
            gen.eval()
        try:
            grids = {}
            for x, y in (("A", "B"), ("B", "A")):
                to_y, to_x = nets[f"gen{x}2{y}"], nets[f"gen{y}2{x}"]
                columns = []
                for real in self.real[x].split(1):
                    ident, _, ident_hm = to_x(real)
                    fake, _, fake_hm = to_y(real)
                    cycle, _, cycle_hm = to_x(fake)
                    columns.append(sample_column(real[0], ident[0], ident_hm[0], fake[0], fake_hm[0],
                                                 cycle[0], cycle_hm[0]))
                grids[f"{x}2{y}"] = make_grid(columns)
            return grids
        finally:
            for gen in gens:
                gen.train()


def rho_stats(nets: dict[str, nn.Module]) -> dict[str, float]:
    """Mean ρ of the adaptive and the plain LIN layers of each generator (how IN vs LN they are)."""
    from ..nn import ILN

    stats = {}
    for name in ("genA2B", "genB2A"):
        groups: dict[str, list[torch.Tensor]] = {}
        for module in nets[name].modules():
            if hasattr(module, "rho") and isinstance(module.rho, torch.Tensor):
                kind = "iln" if isinstance(module, ILN) else "adailn"
                groups.setdefault(kind, []).append(module.rho.detach().float().mean())
        stats.update({f"{name}_{kind}": torch.stack(v).mean().item() for kind, v in groups.items()})
    return stats


class TwoDomainEvaluation:
    """``--eval-freq``: score both generators on the test set by ``--eval-metric``.

    The networks the metric needs (Inception for KID/FID) are loaded once; a metric that cannot
    run (no weights offline, no pairs.csv for paired metrics) is refused at start, not mid-run.
    """

    def __init__(self, cfg, device: torch.device):
        from ..evaluate import METRICS, load_scorers, load_test_set, plan

        self.test = load_test_set(Path(cfg.data), cfg.img_size)
        self.metric = cfg.eval_metric
        has_pairs = self.test.pairs is not None
        weights = Path(cfg.inception_weights) if cfg.inception_weights else None
        self.scorers, reasons = load_scorers([self.metric], has_pairs, device=device, inception_weights=weights)
        smallest = min(len(self.test.a.images), len(self.test.b.images))
        runnable, skipped = plan([self.metric], self.scorers, has_pairs, reasons, smallest)
        if not runnable:
            raise UserError(f"--eval-metric {self.metric} cannot run: {skipped[self.metric]}")
        self.higher_is_better = METRICS[self.metric].higher_is_better

    def __call__(self, nets: dict[str, nn.Module]) -> tuple[dict[str, float], float]:
        """All scores (``A2B/kid``...) and the one number the best checkpoint is chosen by."""
        from ..evaluate import evaluate_generators

        scores = evaluate_generators(nets["genA2B"], nets["genB2A"], self.test.a.images, self.test.b.images,
                                     self.scorers.features, [self.metric], lpips=self.scorers.lpips,
                                     pairs=self.test.pairs)
        return scores, (scores[f"A2B/{self.metric}"] + scores[f"B2A/{self.metric}"]) / 2


class UGATITRecipe:
    """U-GAT-IT: two-domain folders, six networks, the official iteration and grids."""

    progress_keys = ("Discriminator_loss", "Generator_loss")
    supports_distributed = True

    @property
    def config_cls(self) -> type:
        from ..config import UGATITConfig
        return UGATITConfig

    def make_config(self, overrides: dict[str, Any], base: dict[str, Any] | None):
        return self.config_cls(**{**(base or {}), **{k: v for k, v in overrides.items() if v is not None}})

    def prepare(self, cfg) -> list[str]:
        """Validate and fill derived options; returns notes to show the user."""
        from ..config import resolve_n_dis, validate
        if cfg.data is None:
            raise UserError("--data DIR is required: a folder with trainA, trainB, testA, testB "
                            "(or run `unpaired demo` to train on the built-in emoji data)")
        note = resolve_n_dis(cfg)
        validate(cfg)
        return [note] if note else []

    def open_data(self, cfg):
        from ..data import open_dataset
        return open_dataset(Path(cfg.data), cfg.img_size)

    def build_nets(self, cfg, data) -> dict[str, nn.Module]:
        from ..models.ugatit import build_ugatit
        return build_ugatit(cfg.arch())

    def resolve_speed(self, cfg, device: torch.device):
        """``cfg`` with its ``auto`` speed options chosen for ``device`` (train/speed.py)."""
        from .speed import resolve_speed
        return resolve_speed(cfg, device)

    def accelerate(self, nets: dict[str, nn.Module], cfg, device: torch.device) -> None:
        """Apply the resolved speed options to the plain networks (layout, compiling, kernels)."""
        from .speed import accelerate
        accelerate(nets, cfg, device)

    def make_trainer(self, nets: dict[str, nn.Module], cfg, raw: dict[str, nn.Module]):
        from .ugatit import UGATITTrainer
        return UGATITTrainer(nets, cfg, raw=raw)

    def batches(self, data, cfg, start: int, rank: int, world_size: int, workers: int,
                device: torch.device) -> Iterator[tuple]:
        from ..data import DomainStream

        def stream(dataset, stream_id):
            return DomainStream(dataset, cfg.batch_size, cfg.seed, stream_id, start_batch=start, rank=rank,
                                world_size=world_size, num_workers=workers, pin_memory=device.type == "cuda")

        for real_a, real_b in zip(stream(data.train_a, 0), stream(data.train_b, 1)):
            yield real_a.to(device, non_blocking=True), real_b.to(device, non_blocking=True)

    def grids(self, data, cfg, device: torch.device) -> TwoDomainGrids:
        return TwoDomainGrids(data, cfg.n_samples, device)

    def scalars(self, nets: dict[str, nn.Module]) -> dict[str, float]:
        return {f"rho/{k}": v for k, v in rho_stats(nets).items()}

    def evaluation(self, cfg, device: torch.device) -> TwoDomainEvaluation | None:
        return TwoDomainEvaluation(cfg, device) if cfg.eval_freq else None

    def reschedule(self, trainer, cfg, step: int) -> str:
        """The run length changed: the official lr schedule follows the new total from ``step`` on."""
        from .ugatit import official_lr
        lr = official_lr(step, cfg.lr, cfg.iters, cfg.decay_flag)
        trainer.set_lr(lr)
        return f"the learning-rate schedule now follows the new total (lr {lr:.3g} at step {step})"


class Photo2CartoonRecipe(UGATITRecipe):
    """photo2cartoon: U-GAT-IT's data, discriminators and loop; its own generator and face-ID loss."""

    @property
    def config_cls(self) -> type:
        from .photo2cartoon import Photo2CartoonConfig
        return Photo2CartoonConfig

    def prepare(self, cfg) -> list[str]:
        from .photo2cartoon import validate_photo2cartoon
        notes = super().prepare(cfg)
        validate_photo2cartoon(cfg)
        return notes

    def build_nets(self, cfg, data) -> dict[str, nn.Module]:
        from ..models.photo2cartoon import build_photo2cartoon
        return build_photo2cartoon(cfg.arch())

    def make_trainer(self, nets: dict[str, nn.Module], cfg, raw: dict[str, nn.Module]):
        from .photo2cartoon import Photo2CartoonTrainer
        return Photo2CartoonTrainer(nets, cfg, raw=raw)


class StarGANv2Recipe:
    """StarGAN v2: DIR/train/<domain>, DIR/val/<domain>; EMA networks sample the grids."""

    progress_keys = ("D/latent_real", "G/latent_adv")
    supports_distributed = False  # the R1 double backward under DDP is not verified yet

    @property
    def config_cls(self) -> type:
        from .stargan_v2 import StarGANv2Config
        return StarGANv2Config

    def make_config(self, overrides: dict[str, Any], base: dict[str, Any] | None):
        from .stargan_v2 import build_stargan_v2_config
        return build_stargan_v2_config(overrides, base)

    def prepare(self, cfg) -> list[str]:
        if cfg.data is None:
            raise UserError("--data DIR is required: a folder with train/<domain>/ and val/<domain>/ sub-folders")
        return []

    def open_data(self, cfg):
        from ..data_multidomain import open_multidomain
        from .stargan_v2 import validate_stargan_v2

        data = open_multidomain(Path(cfg.data), cfg.img_size, cfg.randcrop_prob)
        if cfg.domains is not None and list(cfg.domains) != list(data.domains):
            raise UserError(f"the run was trained on domains {list(cfg.domains)}, but {cfg.data} holds "
                            f"{list(data.domains)}")
        cfg.domains = list(data.domains)
        validate_stargan_v2(cfg)
        return data

    def build_nets(self, cfg, data) -> dict[str, nn.Module]:
        from ..models.stargan_v2 import build_stargan_v2
        return build_stargan_v2(cfg.arch(), cfg.seed)

    def resolve_speed(self, cfg, device: torch.device):
        """StarGAN v2 always computes the official way (fp32, eager): it has no speed options yet."""
        return cfg

    def accelerate(self, nets: dict[str, nn.Module], cfg, device: torch.device) -> None:
        """Nothing to apply (see ``resolve_speed``)."""

    def make_trainer(self, nets: dict[str, nn.Module], cfg, raw: dict[str, nn.Module]):
        from ..models.stargan_v2 import load_fan
        from .stargan_v2 import StarGANv2Trainer

        fan = None
        if cfg.w_hpf > 0:
            device = next(raw["generator"].parameters()).device
            fan = load_fan(cfg.fan_weights).to(device).eval()
        return StarGANv2Trainer(nets, cfg, fan=fan, raw=raw)

    def batches(self, data, cfg, start: int, rank: int, world_size: int, workers: int,
                device: torch.device) -> Iterator[tuple]:
        from ..data_multidomain import StarGANv2Stream

        stream = StarGANv2Stream(data, cfg.batch_size, cfg.latent_dim, cfg.seed, start_batch=start, rank=rank,
                                 world_size=world_size, num_workers=workers, pin_memory=device.type == "cuda")
        for batch in stream:
            yield (batch.to(device, non_blocking=True),)

    def grids(self, data, cfg, device: torch.device):
        return StarGANv2Grids(data, cfg, device)

    def scalars(self, nets: dict[str, nn.Module]) -> dict[str, float]:
        return {}

    def evaluation(self, cfg, device: torch.device) -> None:
        return None  # StarGAN v2's FID/LPIPS protocol is not wired into training yet

    def reschedule(self, trainer, cfg, step: int) -> str:
        return "learning rates are constant; λ_ds follows its own ds_iter schedule"


class StarGANv2Grids:
    """Latent-guided rows per domain and the reference grid, from a fixed validation batch."""

    def __init__(self, data, cfg, device: torch.device):
        from ..data_multidomain import val_batch

        count = min(cfg.val_batch_size, 8)
        self.x, self.y = (t.to(device) for t in val_batch(data, count))
        generator = torch.Generator().manual_seed(cfg.seed)
        self.latents = torch.randn(3, cfg.latent_dim, generator=generator).to(device)
        self.num_domains = cfg.num_domains

    @torch.no_grad()
    def render(self, nets: dict[str, nn.Module]) -> dict[str, np.ndarray]:
        from ..models.stargan_v2 import ema_nets
        from .stargan_v2 import latent_grid, reference_grid

        ema = ema_nets(nets)
        return {"latent": latent_grid(ema, self.x, self.num_domains, self.latents),
                "reference": reference_grid(ema, self.x, self.x, self.y)}


RECIPES = {"ugatit": UGATITRecipe, "photo2cartoon": Photo2CartoonRecipe, "stargan_v2": StarGANv2Recipe}


def recipe_for(model: str):
    try:
        return RECIPES[model]()
    except KeyError:
        raise UserError(f"unknown --model {model!r} (choose from {', '.join(RECIPES)})") from None


def config_classes() -> dict[str, type]:
    return {name: recipe_for(name).config_cls for name in RECIPES}

