"""Image files: listing folders, decoding any Pillow format to RGB, datasets of validated files.

Differences from the official loaders, all deliberate:
  * every Pillow mode is decoded to 8-bit RGB properly (16-bit scaled, not clipped;
    transparency composited onto white; EXIF rotation applied, as photo viewers show it);
  * unreadable files are skipped with one warning each instead of crashing a long run;
  * a dataset item may carry a seed for its transform (see ``data.streams``), so augmentation
    depends only on the sample, not on which worker process drew it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageMode, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..errors import UserError

log = logging.getLogger("unpaired")

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# What Pillow raises for broken files: truncated/garbled data (OSError, incl.
# UnidentifiedImageError), bad headers (SyntaxError, ValueError), absurd sizes, and, found by
# fuzzing truncated and bit-flipped files, frames and tags that are cut off or garbled
# (EOFError, IndexError, KeyError, TypeError, struct.error: animated GIFs, multi-page TIFFs).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error,
                 Image.DecompressionBombError)

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
            log.warning("skipping %s: not an image file", path)
    if not images:
        raise UserError(f"no images in {folder} (expected image files: {_extension_list(extensions)})")
    return images


def dataset_root(root: Path | str, img_size: int) -> Path:
    """A dataset folder that exists, for a positive image size; one-line errors otherwise."""
    root = Path(root)
    if img_size < 1:
        raise UserError(f"image size must be a positive number of pixels, got {img_size}")
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist")
    return root


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


def to_rgb_peak_bytes(image: Image.Image) -> int:
    """The most memory ``load`` plus ``to_rgb`` hold at once for ``image``, from its header alone.

    For a server that must refuse a picture before decoding it. The decoded samples take
    pixels × channels × bytes per sample (Pillow keeps 2 to 4 8-bit bands in 4 bytes per pixel);
    ``to_rgb`` copies them once (orientation), scales 16-bit samples in two 64-bit arrays at a
    time, composites transparency through three 4-byte RGBA pictures and ends in a 4-byte RGB
    one. Measured peaks (VmHWM, a 12-megapixel PNG) were 6 (L), 12 (RGB), 24 (RGBA) and
    24 (16-bit grey) bytes per pixel, which this gives exactly.
    """
    mode = ImageMode.getmode(image.mode)
    sample = 4 if len(mode.bands) > 1 else int(mode.typestr[2:])
    per_pixel = 2 * sample + 4  # the samples, their upright copy, the RGB result
    if image.mode in SIXTEEN_BIT_MODES:
        per_pixel += 16
    if _has_transparency(image):
        per_pixel += 12
    return image.width * image.height * per_pixel


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


def to_model_tensor(image: Image.Image) -> torch.Tensor:
    """[3,H,W] float in [-1, 1]: ToTensor then Normalize(0.5, 0.5), as the official code."""
    return TF.normalize(TF.to_tensor(image), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])


class ResizeTransform:
    """The official test transform: Resize((S, S)) -> ToTensor -> Normalize. Takes (and ignores)
    a generator so that it shares one call signature with the training augmentations."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        image = TF.resize(image, [self.size, self.size], InterpolationMode.BILINEAR, antialias=True)
        return to_model_tensor(image)


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
                log.warning("skipping %s: cannot decode image (%s)", self.paths[candidate], error)
        raise UserError(f"none of the {len(self)} images in {self.root or 'the file list'} can be decoded")


class NamedImageDataset(ImageDataset):
    """ImageDataset whose items are (tensor, relative path) so outputs can be named after
    their inputs (test sets). If a file had to be replaced, the name is the replacement's."""

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, str]:
        used, tensor = self._sample(item)
        return tensor, self.names[used]


def dataset_folders(data: Any) -> list[Path]:
    """What an opened data set reads: the folder of each ImageDataset among its fields, alone or in
    tuples (``TwoDomainData``, a multi-domain set), or its files when it has no folder."""
    found = []
    for f in dataclasses.fields(data):
        value = getattr(data, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, ImageDataset):
                found += [item.root] if item.root is not None else item.paths
    return found


def _keep_if_readable(path: Path) -> bool:
    """Filter for the construction-time check, warning once per dropped file."""
    reason = _check_readable(path)
    if reason is not None:
        log.warning("skipping %s: unreadable image (%s)", path, reason)
    return reason is None


