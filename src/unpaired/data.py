"""Image folders, decoding, augmentation and resumable batch streams for two-domain training.

A dataset is the folder layout of the official U-GAT-IT code: ROOT/trainA, ROOT/trainB,
ROOT/testA, ROOT/testB, each holding image files (searched recursively).

Differences from the official loader, all deliberate:
  * every Pillow mode is decoded to 8-bit RGB properly (16-bit scaled, not clipped;
    transparency composited onto white; EXIF rotation applied, as photo viewers show it);
  * unreadable files are skipped with one warning each instead of crashing a long run;
  * training randomness (order, flip, crop) comes from seeds derived from
    (seed, stream, epoch, position), so data-loader workers, restarts and resumed runs
    see exactly the same batches.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .errors import UserError

logger = logging.getLogger("unpaired")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
DOMAINS = ("trainA", "trainB", "testA", "testB")
CROP_MARGIN = 30  # official U-GAT-IT: resize to S+30, then random-crop S
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# What Pillow raises for broken files: truncated/garbled data (OSError, incl.
# UnidentifiedImageError), bad headers (SyntaxError, ValueError), absurd sizes.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)

Transform = Callable[[Image.Image, torch.Generator | None], torch.Tensor]


# ----------------------------------------------------------------------------- file listing


def list_images(folder: Path, extensions: Collection[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under `folder`, recursively, in a platform-independent order.

    Sorting by the relative POSIX path makes the index -> file mapping (and so every seeded
    permutation) identical on every machine. Hidden files and folders (".DS_Store",
    ".ipynb_checkpoints") are skipped silently; other non-image files get one warning each so
    a mistyped extension is noticed. `extensions` widens what counts (translate takes videos).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"missing folder {folder}")
    images = []
    for path in sorted(_visible_files(folder), key=lambda p: p.relative_to(folder).as_posix()):
        if path.suffix.lower() in extensions:
            images.append(path)
        else:
            logger.warning("skipping %s: not an image file", path)
    if not images:
        raise UserError(f"no images in {folder} (expected image files: {_extension_list(extensions)})")
    return images


def _visible_files(folder: Path) -> Iterator[Path]:
    """Files under `folder` whose path has no hidden component (hidden folders are pruned)."""
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield Path(directory) / name


def _extension_list(extensions: Collection[str]) -> str:
    """Readable list of accepted extensions for error messages."""
    return ", ".join(sorted(ext.lstrip(".") for ext in extensions))


# ----------------------------------------------------------------------------- decoding


def load_rgb(path: Path) -> Image.Image:
    """Decode any image Pillow reads into an 8-bit RGB image as a viewer would show it.

    Plain `convert("RGB")` (the official code) clips 16-bit data to white, keeps whatever
    colour lies under transparent pixels and ignores EXIF rotation; each of those is fixed
    by one step below.
    """
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """`load_rgb` for an image already in memory (the Python API takes PIL images too)."""
    return _flatten_alpha(_to_8bit(ImageOps.exif_transpose(image)))


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit grayscale (and Pillow's 32-bit "I", which holds 16-bit PNG/TIFF data)
    to 0..255 with rounding, so 65535 -> 255 instead of everything above 255 -> 255."""
    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).astype(np.int64).clip(0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def _has_transparency(image: Image.Image) -> bool:
    """True for alpha bands (RGBA, LA, PA, premultiplied) and for palette/colour-key
    transparency stored in image.info (GIF, PNG tRNS)."""
    return any(band in ("A", "a") for band in image.getbands()) or "transparency" in image.info


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB with transparent areas composited onto white.

    White, not black or the hidden colour: the demo emoji were rendered onto white, and
    cut-out photos/cartoons conventionally sit on white as well.
    """
    if not _has_transparency(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _check_readable(path: Path) -> str | None:
    """Cheap integrity check (header parse + Pillow's verify); returns the reason a file is
    unusable, or None. Formats without a verify step (e.g. JPEG) are caught at load time."""
    try:
        with Image.open(path) as image:
            image.verify()
    except DECODE_ERRORS as error:
        return str(error) or type(error).__name__
    return None


# ----------------------------------------------------------------------------- transforms


def _to_model_tensor(image: Image.Image) -> torch.Tensor:
    """[3,H,W] float in [-1, 1]: ToTensor then Normalize(0.5, 0.5), as the official code."""
    return TF.normalize(TF.to_tensor(image), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


class TrainTransform:
    """Official training augmentation with its randomness taken from an explicit generator.

    Same ops and order as the official RandomHorizontalFlip(0.5) -> Resize((S+30, S+30)) ->
    RandomCrop(S) -> ToTensor -> Normalize, but the flip and crop offsets are drawn from the
    generator passed per sample, so a sample's augmentation depends only on its seed (not on
    which worker process or how many earlier samples drew from a global RNG).
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        flip = torch.rand(1, generator=generator).item() < 0.5
        top, left = torch.randint(0, CROP_MARGIN + 1, (2,), generator=generator).tolist()
        if flip:
            image = TF.hflip(image)
        big = self.size + CROP_MARGIN
        image = TF.resize(image, [big, big], InterpolationMode.BILINEAR, antialias=True)
        return _to_model_tensor(TF.crop(image, top, left, self.size, self.size))


class TestTransform:
    """Official test transform: Resize((S, S)) -> ToTensor -> Normalize. Takes (and ignores)
    a generator so both transforms share one call signature."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = TF.resize(image, [self.size, self.size], InterpolationMode.BILINEAR, antialias=True)
        return _to_model_tensor(image)


# ----------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """Validated image files plus a transform.

    Items are an index, or (index, sample_seed) as produced by DomainStream: the seed feeds
    the transform's generator. Files failing the cheap check at construction are dropped
    with a warning; a file that still fails to decode later is warned about once and
    replaced by the next decodable file, so one bad JPEG cannot kill a multi-day run.
    """

    def __init__(self, paths: Sequence[Path], transform: Transform, root: Path | None = None):
        self.root = root
        self.transform = transform
        self.paths = [path for path in map(Path, paths) if _keep_if_readable(path)]
        if not self.paths:
            raise UserError(f"no readable images in {root or 'the given file list'}")
        self.names = [self._name(path) for path in self.paths]
        self._broken: set[int] = set()

    def _name(self, path: Path) -> str:
        """Stable label of a file: its path relative to root (POSIX), used to name outputs."""
        return path.relative_to(self.root).as_posix() if self.root else path.name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        return self._sample(item)[1]

    def _sample(self, item: int | tuple[int, int]) -> tuple[int, torch.Tensor]:
        """(index actually used, transformed tensor) for an index or (index, seed)."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        used, image = self._load_from(index % len(self))
        return used, self.transform(image, generator)

    def _load_from(self, index: int) -> tuple[int, Image.Image]:
        """Decode image `index`, or the next decodable one after it (wrapping around)."""
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self._broken:
                continue
            try:
                return candidate, load_rgb(self.paths[candidate])
            except DECODE_ERRORS as error:
                self._broken.add(candidate)
                logger.warning("skipping %s: cannot decode image (%s)", self.paths[candidate], error)
        raise UserError(f"none of the {len(self)} images in {self.root or 'the file list'} can be decoded")


class NamedImageDataset(ImageDataset):
    """ImageDataset whose items are (tensor, relative path) so outputs can be named after
    their inputs (test sets). If a file had to be replaced, the name is the replacement's."""

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, str]:
        used, tensor = self._sample(item)
        return tensor, self.names[used]


def _keep_if_readable(path: Path) -> bool:
    """Filter for the construction-time check, warning once per dropped file."""
    reason = _check_readable(path)
    if reason is not None:
        logger.warning("skipping %s: unreadable image (%s)", path, reason)
    return reason is None


@dataclass(frozen=True)
class TwoDomainData:
    """The four datasets of one two-domain folder, transforms already attached."""

    root: Path
    img_size: int
    train_a: ImageDataset
    train_b: ImageDataset
    test_a: NamedImageDataset
    test_b: NamedImageDataset


def open_dataset(root: Path, img_size: int) -> TwoDomainData:
    """Open ROOT/{trainA,trainB,testA,testB}, failing with the exact folder at fault."""
    root = Path(root)
    if img_size < 1:
        raise UserError(f"image size must be a positive number of pixels, got {img_size}")
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist")
    missing = [str(root / domain) for domain in DOMAINS if not (root / domain).is_dir()]
    if missing:
        raise UserError(f"missing folder {', '.join(missing)}: a dataset needs {', '.join(DOMAINS)}")
    train, test = TrainTransform(img_size), TestTransform(img_size)

    def domain(name: str, kind: type[ImageDataset], transform: Transform) -> ImageDataset:
        folder = root / name
        return kind(list_images(folder), transform, root=folder)

    return TwoDomainData(
        root=root,
        img_size=img_size,
        train_a=domain("trainA", ImageDataset, train),
        train_b=domain("trainB", ImageDataset, train),
        test_a=domain("testA", NamedImageDataset, test),
        test_b=domain("testB", NamedImageDataset, test),
    )


def demo_dataset_path() -> Path:
    """The 64x64 emoji demo data set shipped inside the package (see its README for
    licences). Located next to this module so it works from a checkout and an install."""
    path = Path(__file__).resolve().parent / "demo_data" / "emoji64"
    if not path.is_dir():
        raise UserError(f"demo data missing at {path}: reinstall the package with its data files")
    return path


# ----------------------------------------------------------------------------- batch streams


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
