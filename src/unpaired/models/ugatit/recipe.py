"""What the training loop asks of U-GAT-IT (``training.contracts.Recipe``): data, networks,
trainer, batches, the official 7-row sample grids, ρ statistics and periodic evaluation.

photo2cartoon and the TF-exact U-GAT-IT train on the same two-domain folders with the same grids
and evaluation; their recipes derive from this one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...data.streams import DomainStream
from ...data.two_domain import TwoDomainData
from ...errors import UserError
from ...evaluation.common import load_scorers, plan
from ...evaluation.two_domain import evaluate_generators, load_test_set
from ...metrics import METRICS
from ...nn import ILN
from ...training import speed
from ...viz import make_grid, sample_column
from .data import open_dataset
from .networks import GENERATOR_NAMES, build_ugatit
from .options import UGATITOptions, resolve_n_dis, validate
from .train import UGATITTrainer, official_lr


class TwoDomainGrids:
    """Official 7-row sample grids over a fixed set of train and test images per domain.

    The official code steals fresh training batches for every grid; fixed images (with a fixed
    augmentation seed) make grids comparable across steps and leave the training stream alone.
    """

    def __init__(self, data: TwoDomainData, n: int, device: torch.device):
        def pick(dataset, count):
            idx = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
            items = [dataset[(int(i), 0)] for i in idx]
            return torch.stack([x[0] if isinstance(x, tuple) else x for x in items]).to(device)

        self.real = {"A": torch.cat([pick(data.train_a, n), pick(data.test_a, n)]),
                     "B": torch.cat([pick(data.train_b, n), pick(data.test_b, n)])}

    @torch.no_grad()
    def render(self, nets: Mapping[str, nn.Module]) -> dict[str, np.ndarray]:
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


def rho_stats(nets: Mapping[str, nn.Module], plain: type[nn.Module] = ILN) -> dict[str, float]:
    """Mean ρ of the adaptive and the ``plain`` LIN layers of each generator (how IN vs LN they are)."""
    stats = {}
    for name in GENERATOR_NAMES:
        groups: dict[str, list[torch.Tensor]] = {}
        for module in nets[name].modules():
            if hasattr(module, "rho") and isinstance(module.rho, torch.Tensor):
                kind = "iln" if isinstance(module, plain) else "adailn"
                groups.setdefault(kind, []).append(module.rho.detach().float().mean())
        stats.update({f"{name}_{kind}": torch.stack(v).mean().item() for kind, v in groups.items()})
    return stats


class TwoDomainEvaluation:
    """``--eval-freq``: score both generators on the test set by ``--eval-metric``.

    The networks the metric needs (Inception for KID/FID) are loaded once; a metric that cannot
    run (no weights offline, no pairs.csv for paired metrics) is refused at start, not mid-run.
    """

    def __init__(self, opts: UGATITOptions, device: torch.device):
        self.test = load_test_set(Path(opts.data), opts.arch.img_size)
        self.metric = opts.eval_metric
        has_pairs = self.test.pairs is not None
        weights = Path(opts.inception_weights) if opts.inception_weights else None
        self.scorers, reasons = load_scorers([self.metric], has_pairs, device=device, inception_weights=weights)
        smallest = min(len(self.test.a.images), len(self.test.b.images))
        runnable, skipped = plan([self.metric], self.scorers, has_pairs, reasons, smallest)
        if not runnable:
            raise UserError(f"--eval-metric {self.metric} cannot run: {skipped[self.metric]}")
        self.higher_is_better = METRICS[self.metric].higher_is_better

    def __call__(self, nets: Mapping[str, nn.Module]) -> tuple[dict[str, float], float]:
        """All scores (``A2B/kid``...) and the one number the best checkpoint is chosen by."""
        scores = evaluate_generators(nets["genA2B"], nets["genB2A"], self.test.a.images, self.test.b.images,
                                     self.scorers.features, [self.metric], lpips=self.scorers.lpips,
                                     pairs=self.test.pairs)
        return scores, (scores[f"A2B/{self.metric}"] + scores[f"B2A/{self.metric}"]) / 2


class UGATITRecipe:
    """U-GAT-IT: two-domain folders, six networks, the official iteration and grids."""

    progress_keys = ("Discriminator_loss", "Generator_loss")
    supports_distributed = True
    plain_norm: type[nn.Module] = ILN  # the decoder's LIN layers, told apart from the AdaLIN ones in ρ stats

    def prepare(self, opts: UGATITOptions) -> tuple[UGATITOptions, list[str]]:
        opts, note = resolve_n_dis(opts)
        validate(opts)
        return opts, [note] if note else []

    def open_data(self, opts: UGATITOptions) -> tuple[TwoDomainData, UGATITOptions]:
        return open_dataset(Path(opts.data), opts.arch.img_size), opts

    def build_nets(self, opts: UGATITOptions) -> dict[str, nn.Module]:
        return build_ugatit(opts.arch)

    def resolve_speed(self, opts: UGATITOptions, device: torch.device) -> UGATITOptions:
        return speed.resolve_speed(opts, device)

    def accelerate(self, nets: dict[str, nn.Module], opts: UGATITOptions, device: torch.device) -> None:
        speed.accelerate(nets, opts, device)

    def make_trainer(self, nets: dict[str, nn.Module], opts: UGATITOptions, raw: dict[str, nn.Module]):
        return UGATITTrainer(nets, opts, raw=raw)

    def batches(self, data: TwoDomainData, opts: UGATITOptions, start: int, rank: int, world_size: int,
                workers: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        def stream(dataset, stream_id):
            return DomainStream(dataset, opts.batch_size, opts.seed, stream_id, start_batch=start, rank=rank,
                                world_size=world_size, num_workers=workers, pin_memory=device.type == "cuda")

        for real_a, real_b in zip(stream(data.train_a, 0), stream(data.train_b, 1)):
            yield real_a.to(device, non_blocking=True), real_b.to(device, non_blocking=True)

    def grids(self, data: TwoDomainData, opts: UGATITOptions, device: torch.device) -> TwoDomainGrids:
        return TwoDomainGrids(data, opts.n_samples, device)

    def scalars(self, nets: Mapping[str, nn.Module]) -> dict[str, float]:
        return {f"rho/{k}": v for k, v in rho_stats(nets, self.plain_norm).items()}

    def evaluation(self, opts: UGATITOptions, device: torch.device) -> TwoDomainEvaluation | None:
        return TwoDomainEvaluation(opts, device) if opts.eval_freq else None

    def reschedule(self, trainer: UGATITTrainer, opts: UGATITOptions, step: int) -> str:
        """The run length changed: the official lr schedule follows the new total from ``step`` on."""
        lr = official_lr(step, opts.lr, opts.iters, opts.decay_flag)
        trainer.set_lr(lr)
        return f"the learning-rate schedule now follows the new total (lr {lr:.3g} at step {step})"
