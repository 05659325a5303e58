"""Sample grids and CAM heatmaps that look like the official U-GAT-IT output, without OpenCV.

The official trainer writes, every ``print_freq`` steps, one PNG per direction whose columns
are ``real · hm(identity) · identity · hm(fake) · fake · hm(cycle) · cycle``.  Heatmaps go
through ``min/max`` normalisation, a *truncating* ``uint8`` cast, an ``INTER_LINEAR`` resize
and ``COLORMAP_JET``.  Each of those steps is reproduced here with numpy/torch so sample
images stay comparable with the paper's figures while the package needs no ``cv2``.

All arrays returned are ``uint8`` HWC RGB; all tensor inputs may live on any device and have
any floating dtype (bf16/fp16 included), because samplers call this straight on model output.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .files import atomic_path

__all__ = [
    "colorize_heatmap",
    "jet_colormap",
    "make_grid",
    "normalize_heatmap",
    "overlay_heatmap",
    "sample_column",
    "save_png",
    "to_uint8_image",
]


def _as_cpu_float(t: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Detach to CPU float32 so bf16/fp16/GPU outputs need no care from callers.

    NaN becomes 0 so that a diverging generator still yields a (black/blue) sample image
    instead of an undefined cast.
    """
    t = torch.as_tensor(t).detach().to(device="cpu", dtype=torch.float32)
    return torch.nan_to_num(t, nan=0.0)


def _round_to_uint8(t: torch.Tensor) -> np.ndarray:
    """Round half-to-even and saturate, like OpenCV's ``saturate_cast<uchar>``."""
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def to_uint8_image(t: torch.Tensor) -> np.ndarray:
    """Turn a generator image ``[3,H,W]`` in ``[-1,1]`` into an ``[H,W,3]`` uint8 RGB tile."""
    x = _as_cpu_float(t)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image tensor of shape [3,H,W], got {tuple(x.shape)}")
    x = (x * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0
    return _round_to_uint8(x.permute(1, 2, 0))


@functools.cache
def jet_colormap() -> np.ndarray:
    """The 256-entry JET lookup table (index 0 dark blue, 255 dark red) as ``[256,3]`` RGB.

    Built from the classic piecewise-linear ramps ``clip(1.5 - |4x - c|)`` with ``c = 3, 2, 1``
    for r, g, b.  The array is read-only because it is shared by every call.
    """
    x = np.arange(256, dtype=np.float64) / 255.0
    centres = np.array([3.0, 2.0, 1.0])
    ramps = np.clip(1.5 - np.abs(4.0 * x[:, None] - centres[None, :]), 0.0, 1.0)
    lut = np.rint(ramps * 255.0).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _as_map(h: torch.Tensor | np.ndarray) -> np.ndarray:
    """Accept a heatmap as ``[1,h,w]`` or ``[h,w]`` and return it as a float32 ``[h,w]`` array."""
    x = _as_cpu_float(h)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"expected a heatmap of shape [1,h,w] or [h,w], got {tuple(x.shape)}")
    return x.numpy()


def normalize_heatmap(h: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min/max-normalise a heatmap to ``uint8`` by truncation, as the official ``cam()`` does.

    The official code divides by the max after subtracting the min, which gives NaN for a
    constant map; here a constant map becomes all zeros so it renders as plain low-JET blue.
    """
    x = _as_map(h)
    x = x - x.min()
    peak = x.max()
    scaled = x / peak if peak > 0 else np.zeros_like(x)
    return (np.float32(255.0) * scaled).astype(np.uint8)


def _resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a ``uint8`` ``[h,w]`` map with half-pixel centres and no antialias (INTER_LINEAR)."""
    x = torch.from_numpy(img).to(torch.float32)[None, None]
    y = F.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=False
    )
    return _round_to_uint8(y[0, 0])


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """Square tiles are the common case, but overlays follow the image's own height and width."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def colorize_heatmap(h: torch.Tensor | np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Render a CAM heatmap as an official-looking ``[size,size,3]`` (or ``[H,W,3]``) JET tile."""
    height, width = _size_hw(size)
    return jet_colormap()[_resize_bilinear(normalize_heatmap(h), height, width)]


def sample_column(
    real: torch.Tensor,
    ident: torch.Tensor,
    ident_hm: torch.Tensor,
    fake: torch.Tensor,
    fake_hm: torch.Tensor,
    cycle: torch.Tensor,
    cycle_hm: torch.Tensor,
) -> np.ndarray:
    """Stack one sample's seven tiles vertically in the official order, giving ``[7H,W,3]``.

    Each heatmap tile sits directly above the image it explains: real, hm(identity), identity,
    hm(fake), fake, hm(cycle), cycle.  Heatmaps are resized to the real image's size.
    """
    real_tile = to_uint8_image(real)
    hw = real_tile.shape[:2]
    tiles = [real_tile]
    for heatmap, image in ((ident_hm, ident), (fake_hm, fake), (cycle_hm, cycle)):
        tiles += [colorize_heatmap(heatmap, hw), to_uint8_image(image)]
    shapes = {tile.shape for tile in tiles}
    if len(shapes) != 1:
        raise ValueError(f"sample tiles differ in shape: {sorted(shapes)}")
    return np.concatenate(tiles, axis=0)


def _hconcat(arrays: list[np.ndarray]) -> np.ndarray:
    """Place uint8 RGB arrays of equal height left to right, refusing silent misalignment."""
    if not arrays:
        raise ValueError("nothing to concatenate: the list of tiles is empty")
    for a in arrays:
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected uint8 [H,W,3] arrays, got {a.dtype} {a.shape}")
    heights = {a.shape[0] for a in arrays}
    if len(heights) != 1:
        raise ValueError(f"tiles must share one height, got {sorted(heights)}")
    return np.concatenate(arrays, axis=1)


def make_grid(columns: list[np.ndarray]) -> np.ndarray:
    """Join sample columns (or tiles) left to right: official grids hold 5 train then 5 test samples
    per PNG; a test result is the row ``input | heatmap | translation``."""
    return _hconcat(columns)


def overlay_heatmap(
    image_uint8: np.ndarray, heatmap: torch.Tensor | np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Alpha-blend the JET-coloured heatmap over an ``[H,W,3]`` uint8 image.

    Shows *where* the attention falls on the picture itself, which is easier to read than a
    separate heatmap tile; ``alpha`` is the heatmap's weight (0 = image only, 1 = heatmap only).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if image_uint8.dtype != np.uint8 or image_uint8.ndim != 3 or image_uint8.shape[2] != 3:
        raise ValueError(
            f"expected a uint8 [H,W,3] image, got {image_uint8.dtype} {image_uint8.shape}"
        )
    image = torch.from_numpy(image_uint8).float()
    colour = torch.from_numpy(colorize_heatmap(heatmap, image_uint8.shape[:2])).float()
    blended = (1.0 - alpha) * image + alpha * colour
    return _round_to_uint8(blended)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``array`` as a PNG atomically (see ``files.atomic_path``); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return path
