"""Seeded, resumable, shardable batch streams.

Training randomness (order, augmentation) comes from seeds derived from (seed, stream, epoch,
position), never from a global RNG or a worker's RNG, so data-loader workers, restarts and
resumed runs see exactly the same batches, and resuming at step k is an arithmetic skip.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError


def mix_seed(*parts: int | str) -> int:
    """Deterministic 63-bit seed from a tuple of parts.

    A cryptographic hash (not Python's salted hash()) gives the same value in every process
    and Python run, and unrelated seeds for neighbouring inputs (epoch 3 vs 4).
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededBatchSampler(Sampler):
    """Infinite stream of batches, each a list of (dataset index, sample seed).

    Epoch e shuffles with randperm seeded by (seed, stream_id, e); rank r takes positions
    r, r+W, r+2W, ... of that order, padded by wrapping (as DistributedSampler does) so all
    ranks see the same number of samples. A sample's augmentation seed depends on
    (seed, stream_id, epoch, position in the epoch order), never on what was drawn before,
    which is what makes `start_batch` a pure arithmetic skip.
    """

    def __init__(self, size: int, batch_size: int, seed: int, stream_id: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("cannot stream batches from an empty dataset")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.size, self.batch_size = size, batch_size
        self.seed, self.stream_id, self.start_batch = seed, stream_id, start_batch
        self.rank, self.world_size = rank, world_size
        self.samples_per_rank = math.ceil(size / world_size)
        self.batches_per_epoch = math.ceil(self.samples_per_rank / batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, first = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            samples = self._epoch_samples(epoch)
            for batch in range(first, self.batches_per_epoch):
                yield samples[batch * self.batch_size:(batch + 1) * self.batch_size]
            epoch, first = epoch + 1, 0

    def _epoch_samples(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's (index, seed) pairs for one epoch, in order."""
        generator = torch.Generator().manual_seed(mix_seed("order", self.seed, self.stream_id, epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        positions = range(self.rank, self.samples_per_rank * self.world_size, self.world_size)
        return [
            (order[pos % self.size], mix_seed("sample", self.seed, self.stream_id, epoch, pos))
            for pos in positions
        ]


class DomainStream:
    """Endless, resumable, shardable stream of [B,3,S,S] training batches from one domain.

    Iterating starts at `start_batch` (resume at step k with start_batch=k: skipped batches
    are never decoded). Batches are identical for any num_workers, because every random
    choice comes from the per-sample seeds of SeededBatchSampler, not from worker RNGs.
    The last batch of each epoch may be smaller than batch_size (official drop_last=False).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, stream_id: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool = False):
        self.sampler = SeededBatchSampler(len(dataset), batch_size, seed, stream_id,
                                          start_batch, rank, world_size)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            prefetch_factor=2 if num_workers > 0 else None,
        )

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch on this rank (the step count at which epoch 1 starts)."""
        return self.sampler.batches_per_epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.loader)


def default_num_workers() -> int:
    """Loader worker processes to use by default: one per core we may use, minus one.

    One core stays free for the training loop itself (which otherwise competes with its own
    loaders), and more than 4 workers buys nothing for small images while each worker costs
    memory and start-up time. CPU affinity is honoured where the OS reports it (containers,
    cluster jobs), since os.cpu_count() counts cores the process may not run on.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(4, cores - 1))
