"""What the training loop asks of the TF-exact U-GAT-IT: U-GAT-IT's folders, grids and evaluation,
with TF's networks, augmentation, iteration (its own batch for each step) and schedule."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ...data.streams import DomainStream
from ...data.two_domain import TwoDomainData, open_two_domain
from ...training import speed
from ..ugatit.options import validate
from ..ugatit.recipe import UGATITRecipe
from .data import TFTrainTransform
from .networks import DISCRIMINATOR_NAMES, LIN, build_ugatit_tf, set_sn_outputs
from .options import DEFAULT_N_DIS, UGATITTFOptions
from .train import PENALISED, UGATITTFTrainer, tf_lr


class UGATITTFRecipe(UGATITRecipe):
    plain_norm = LIN

    def prepare(self, opts: UGATITTFOptions) -> tuple[UGATITTFOptions, list[str]]:
        """The discriminator depth chosen for the image size when not given (a note when it is not 6)."""
        resolved = dataclasses.replace(opts, arch=opts.arch.resolved())
        validate(resolved)
        if opts.arch.n_dis is None and resolved.arch.n_dis != DEFAULT_N_DIS:
            return resolved, [f"img_size {resolved.arch.img_size}: discriminator depth n_dis {resolved.arch.n_dis} "
                              f"(the official {DEFAULT_N_DIS} needs img_size >= 96)"]
        return resolved, []

    def open_data(self, opts: UGATITTFOptions) -> tuple[TwoDomainData, UGATITTFOptions]:
        size = opts.arch.img_size
        return open_two_domain(Path(opts.data), size, TFTrainTransform(size, augment=opts.augment)), opts

    def build_nets(self, opts: UGATITTFOptions) -> dict[str, nn.Module]:
        return build_ugatit_tf(opts.arch)

    def accelerate(self, nets: dict[str, nn.Module], opts: UGATITTFOptions, device: torch.device) -> None:
        """The TF networks keep their own spectral norm (one stored u); sn_outputs switches it to
        dividing the conv outputs, the rest is the shared mechanism. A gradient penalty
        differentiates the discriminators twice: lean mode then recomputes their branches whole."""
        for net in nets.values():
            set_sn_outputs(net, bool(opts.sn_outputs))
        for name in DISCRIMINATOR_NAMES:
            nets[name].memory_keeps_convolutions = opts.gan_type not in PENALISED
        speed.accelerate(nets, dataclasses.replace(opts, sn_outputs=False), device)

    def make_trainer(self, nets: dict[str, nn.Module], opts: UGATITTFOptions, raw: dict[str, nn.Module]):
        return UGATITTFTrainer(nets, opts, raw=raw)

    def batches(self, data: TwoDomainData, opts: UGATITTFOptions, start: int, rank: int, world_size: int,
                workers: int, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
        """(A, B) for the D step and, unless ``same_batch``, another (A, B) for the G step, as TF's
        two ``sess.run`` calls each pull their own batch."""
        def stream(dataset, stream_id):
            return DomainStream(dataset, opts.batch_size, opts.seed, stream_id, start_batch=start, rank=rank,
                                world_size=world_size, num_workers=workers, pin_memory=device.type == "cuda")

        streams = [stream(data.train_a, 0), stream(data.train_b, 1)]
        if not opts.same_batch:
            streams += [stream(data.train_a, 2), stream(data.train_b, 3)]
        for batch in zip(*streams):
            yield tuple(images.to(device, non_blocking=True) for images in batch)

    def reschedule(self, trainer: UGATITTFTrainer, opts: UGATITTFOptions, step: int) -> str:
        lr = tf_lr(step + 1, opts.lr, opts.iters, opts.epoch_iters, opts.decay_flag, opts.decay_epoch)
        return f"the per-epoch learning-rate schedule follows the new total (lr {lr:.3g} at step {step + 1})"
