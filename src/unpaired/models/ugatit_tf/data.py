"""The official TF code's image pre-processing, as transforms for our datasets (``transform(image, generator)``).

Training (``utils.ImageData.image_processing``): decode, ``tf.image.resize_images`` to S (TF 1
bilinear: corner-aligned source grid, no half-pixel offset, no antialiasing, float result),
``x / 127.5 − 1``; then, with probability 0.5, augmentation: random horizontal flip (p 0.5),
resize to S + 30 (S = 256) or S + 15 (other S), random S×S crop. The TF code draws that 0.5 with
Python's ``random`` once, while building the graph, so a whole run is augmented or not at all;
we draw it per image, which is what the code means (and what its authors describe).

Testing (``utils.load_test_data``): OpenCV's bilinear resize of the 8-bit image (half-pixel
grid, no antialiasing, rounded back to 8 bits), ``/ 127.5 − 1`` in float64, fed as float32.
It differs from our ``data.TestTransform`` (antialiased): without antialiasing, shrinking a large
photo aliases, and the released models were only ever tested that way. We compute the resize
in floating point and round; OpenCV's fixed-point arithmetic can differ by one 8-bit level.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F


def augment_margin(size: int) -> int:
    """How much larger than S the TF augmentation resizes before cropping."""
    return 30 if size == 256 else 15


def _image_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] float32 of the 8-bit RGB values (0..255)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32).copy()).permute(2, 0, 1)


def _legacy_grid(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TF 1 ``compute_interpolation_weights`` with the legacy scaler: source ``i · in/out`` in float32."""
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.arange(out_size, dtype=np.float32) * scale
    lower = np.floor(source)
    upper = np.minimum(np.ceil(source), in_size - 1)
    return torch.from_numpy(lower.astype(np.int64)), torch.from_numpy(upper.astype(np.int64)), \
        torch.from_numpy(source - lower)


def tf_resize_bilinear(image: torch.Tensor, size: int) -> torch.Tensor:
    """``tf.image.resize_images(image, [size, size])`` of TF 1 for a [C, H, W] float32 tensor.

    Same interpolation order as TF: along x within the top and the bottom row, then along y.
    """
    _, height, width = image.shape
    y0, y1, fy = _legacy_grid(height, size)
    x0, x1, fx = _legacy_grid(width, size)
    top, bottom = image[:, y0], image[:, y1]
    top = top[:, :, x0] + (top[:, :, x1] - top[:, :, x0]) * fx
    bottom = bottom[:, :, x0] + (bottom[:, :, x1] - bottom[:, :, x0]) * fx
    return top + (bottom - top) * fy[:, None]


class TFTrainTransform:
    """TF training pre-processing and augmentation; randomness from the generator passed per sample.

    Every sample draws the same four numbers (augment?, flip?, crop top, crop left), used or not,
    so a sample's result depends only on its generator's seed.
    """

    def __init__(self, size: int, augment: bool = True, augment_probability: float = 0.5):
        self.size, self.augment, self.augment_probability = size, augment, augment_probability

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        augment = torch.rand(1, generator=generator).item() < self.augment_probability
        flip = torch.rand(1, generator=generator).item() < 0.5
        margin = augment_margin(self.size)
        top, left = torch.randint(0, margin + 1, (2,), generator=generator).tolist()
        x = tf_resize_bilinear(_image_tensor(image), self.size) / 127.5 - 1
        if not (self.augment and augment):
            return x
        if flip:
            x = x.flip(-1)
        x = tf_resize_bilinear(x, self.size + margin)
        return x[:, top:top + self.size, left:left + self.size].contiguous()


class TFInferenceTransform:
    """TF test pre-processing (OpenCV-style bilinear resize to S, 8-bit, ``/ 127.5 − 1``).

    Takes (and ignores) a generator so both transforms share one call signature.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _image_tensor(image)[None]
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
            x = x.round().clamp(0, 255)
        return (x[0].double() / 127.5 - 1).float()
