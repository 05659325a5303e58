"""Multi-domain image folders and the StarGAN v2 training stream.

A dataset is the official StarGAN v2 layout: ROOT/train/<domain>/... and ROOT/val/<domain>/...,
one sub-folder per domain (its name is the domain's name; sorted names give the label order, as
torchvision's ImageFolder in the official code). Decoding, validation and bad-file handling are
those of ``unpaired.data.images``.

The stream yields what the official ``InputFetcher`` yields, (x_src, y_src, x_ref, x_ref2, y_ref,
z_trg, z_trg2), with the official sampling: each domain equally likely (its balanced weighted
sampler), the two references from the same domain, z ~ N(0, I). Unlike the official loader, every
random choice of sample n comes from a seed derived from (seed, stream, n), so a resumed run or a
different number of loader workers sees exactly the same batches. The second reference is drawn
independently within the domain (official: a fixed random permutation of the domain), which gives
the same distribution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import functional as TF

from ...data.images import ImageDataset, NamedImageDataset, ResizeTransform, dataset_root, list_images
from ...data.streams import mix_seed
from ...errors import UserError

CROP_SCALE = (0.8, 1.0)
CROP_RATIO = (0.9, 1.1)
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before falling back to a centre crop
SEED_RANGE = 2**62


# ----------------------------------------------------------------------------- augmentation


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return torch.empty(1).uniform_(low, high, generator=generator).item()


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator).item())


def crop_box(width: int, height: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a RandomResizedCrop box: torchvision's draws, from an explicit generator.

    Area scale uniform in CROP_SCALE, aspect ratio log-uniform in CROP_RATIO; after CROP_ATTEMPTS
    boxes that do not fit, the largest centred box within the ratio range.
    """
    area = width * height
    log_ratio = torch.log(torch.tensor(CROP_RATIO))  # float32 steps as torchvision, so boxes match it exactly
    for _ in range(CROP_ATTEMPTS):
        target = area * _uniform(*CROP_SCALE, generator)
        ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    if width / height < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class StarGANv2TrainTransform:
    """The official training augmentation with its randomness from the per-sample generator.

    With probability ``crop_prob`` a RandomResizedCrop (scale 0.8-1, ratio 0.9-1.1) to S x S,
    otherwise a plain resize to S x S; then a horizontal flip with probability 0.5; to [-1, 1].
    """

    def __init__(self, size: int, crop_prob: float = 0.5):
        self.crop_prob = crop_prob
        self.resize = ResizeTransform(size)  # resize to S x S, ToTensor, Normalize(0.5, 0.5)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        if _uniform(0.0, 1.0, generator) < self.crop_prob:
            image = TF.crop(image, *crop_box(image.width, image.height, generator))
        tensor = self.resize(image)
        return tensor.flip(-1) if _uniform(0.0, 1.0, generator) < 0.5 else tensor


# ----------------------------------------------------------------------------- folders


def list_domains(folder: Path) -> tuple[str, ...]:
    """Sorted names of the visible sub-folders of ``folder`` (one per domain), at least two."""
    if not folder.is_dir():
        raise UserError(f"missing folder {folder}: a multi-domain dataset needs train/<domain>/ and val/<domain>/")
    domains = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(domains) < 2:
        raise UserError(f"{folder} holds {len(domains)} domain folder(s) ({', '.join(domains) or 'none'}); "
                        f"stargan_v2 needs at least two, one sub-folder per domain")
    return domains


@dataclass(frozen=True)
class MultiDomainData:
    """Training and validation images of every domain, transforms attached, in label order."""

    root: Path
    img_size: int
    domains: tuple[str, ...]
    train: tuple[ImageDataset, ...]
    val: tuple[NamedImageDataset, ...]


def open_multidomain(root: Path, img_size: int, crop_prob: float = 0.5) -> MultiDomainData:
    """Open ROOT/train/<domain> and ROOT/val/<domain>, failing with the exact folder at fault."""
    root = dataset_root(root, img_size)
    domains = list_domains(root / "train")
    val_domains = list_domains(root / "val")
    if val_domains != domains:
        raise UserError(f"{root / 'val'} has domains {', '.join(val_domains)} but {root / 'train'} has "
                        f"{', '.join(domains)}: both need the same domain folders")
    train_transform, val_transform = StarGANv2TrainTransform(img_size, crop_prob), ResizeTransform(img_size)

    def split(name: str, kind: type[ImageDataset], transform) -> tuple[ImageDataset, ...]:
        folders = [root / name / domain for domain in domains]
        return tuple(kind(list_images(folder), transform, root=folder) for folder in folders)

    return MultiDomainData(root=root, img_size=img_size, domains=domains,
                           train=split("train", ImageDataset, train_transform),
                           val=split("val", NamedImageDataset, val_transform))


def val_batch(data: MultiDomainData, count: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of ``count`` validation images and their labels, for sample grids.

    Item k is image ``start + k // D`` (wrapping) of domain ``k % D``, so every domain appears and
    a different ``start`` gives other images (e.g. sources at 0, references at ``count``).
    """
    images, labels = [], []
    for k in range(count):
        domain = k % len(data.domains)
        dataset = data.val[domain]
        images.append(dataset[(start + k // len(data.domains)) % len(dataset)][0])
        labels.append(domain)
    return torch.stack(images), torch.tensor(labels)


# ----------------------------------------------------------------------------- training stream


class StarGANv2Batch(NamedTuple):
    """One training batch, the official InputFetcher's fields. Images [B,3,S,S] in [-1,1],
    labels [B] int64, latent codes [B, latent_dim]."""

    x_src: torch.Tensor
    y_src: torch.Tensor
    x_ref: torch.Tensor
    x_ref2: torch.Tensor
    y_ref: torch.Tensor
    z_trg: torch.Tensor
    z_trg2: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StarGANv2Batch:
        return StarGANv2Batch(*(t.to(device, non_blocking=non_blocking) for t in self))


class TrainingSamples(Dataset):
    """Sample number n of the stream, computed from n alone (so any worker can compute any sample)."""

    def __init__(self, train: Sequence[ImageDataset], latent_dim: int, seed: int, stream_id: int = 0):
        self.train, self.latent_dim = tuple(train), latent_dim
        self.seed, self.stream_id = seed, stream_id

    def _image(self, domain: int, generator: torch.Generator) -> torch.Tensor:
        dataset = self.train[domain]
        index = _randint(len(dataset), generator)
        return dataset[(index, _randint(SEED_RANGE, generator))]

    def __getitem__(self, n: int) -> StarGANv2Batch:
        generator = torch.Generator().manual_seed(mix_seed("stargan_v2", self.seed, self.stream_id, n))
        y_src = _randint(len(self.train), generator)
        y_ref = _randint(len(self.train), generator)
        x_src = self._image(y_src, generator)
        x_ref, x_ref2 = self._image(y_ref, generator), self._image(y_ref, generator)
        z_trg, z_trg2 = torch.randn(2, self.latent_dim, generator=generator)
        return StarGANv2Batch(x_src, torch.tensor(y_src), x_ref, x_ref2, torch.tensor(y_ref), z_trg, z_trg2)


class SampleNumbers(Sampler):
    """Infinite batches of sample numbers: batch b of rank r holds (b*W + r)*B ... (b*W + r)*B + B-1."""

    def __init__(self, batch_size: int, start_batch: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.batch_size, self.start_batch = batch_size, start_batch
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in itertools.count(self.start_batch):
            first = (batch * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))


class StarGANv2Stream:
    """Endless, resumable, shardable stream of StarGANv2Batch.

    Iterating starts at batch ``start_batch`` (resume at step k with start_batch=k; skipped
    batches are never decoded). Batches are always full (official drop_last=True).
    """

    def __init__(self, data: MultiDomainData, batch_size: int, latent_dim: int, seed: int,
                 stream_id: int = 0, start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, pin_memory: bool = False):
        self.sampler = SampleNumbers(batch_size, start_batch, rank, world_size)
        self.loader = DataLoader(
            TrainingSamples(data.train, latent_dim, seed, stream_id),
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            prefetch_factor=2 if num_workers > 0 else None,
        )

    def __iter__(self) -> Iterator[StarGANv2Batch]:
        return iter(self.loader)
