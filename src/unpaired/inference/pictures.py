"""Pictures in and out of a model's S×S square.

Pictures are PIL images, uint8 arrays (HxW, HxWx3, HxWx4) or float [3,H,W] tensors in [-1, 1].
Pictures of another shape than the square are fitted into it in one of two ways (``fit``):

* ``"stretch"`` (default, what the official test phases do): resize the whole picture to S×S,
  squashing a non-square one;
* ``"pad"``: scale the longer side to S and extend the shorter one to S by repeating the edge
  pixels, so faces keep their proportions; the padding is cropped off the result.

The result is S×S (stretch) or the picture's own aspect at S on its longer side (pad); with
``keep_size=True`` it is resized back to the input's exact width and height.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..data.images import ResizeTransform, to_rgb
from ..viz import to_uint8_image

FITS = ("stretch", "pad")
Picture = Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Placement:
    """Where a picture of ``height``×``width`` sits in the model's square, and how to undo that.

    ``box`` is (top, left, height, width) of the picture inside the square.
    """

    height: int
    width: int
    box: tuple[int, int, int, int]
    keep_size: bool

    def restore(self, square: Image.Image | torch.Tensor) -> Image.Image | torch.Tensor:
        """Crop the picture out of a model-sized square (result or heatmap) and size it as asked."""
        region = TF.crop(square, *self.box)
        if self.keep_size:
            region = _resize(region, self.height, self.width)
        return region


def _size_of(picture: Image.Image | torch.Tensor) -> tuple[int, int]:
    return (picture.height, picture.width) if isinstance(picture, Image.Image) else tuple(picture.shape[-2:])


def _resize(picture: Image.Image | torch.Tensor, height: int, width: int) -> Image.Image | torch.Tensor:
    if _size_of(picture) == (height, width):
        return picture
    return TF.resize(picture, [height, width], InterpolationMode.BILINEAR, antialias=True)


def place(picture: Image.Image | torch.Tensor, size: int, fit: str, keep_size: bool
          ) -> tuple[Image.Image | torch.Tensor, Placement]:
    """Fit a PIL picture or a [3,H,W] tensor into a size×size square (see the module docstring)."""
    height, width = _size_of(picture)
    if fit == "stretch":
        return _resize(picture, size, size), Placement(height, width, (0, 0, size, size), keep_size)
    if fit != "pad":
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    scale = size / max(height, width)
    inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    padding = [left, top, size - inner_w - left, size - inner_h - top]
    square = TF.pad(_resize(picture, inner_h, inner_w), padding, padding_mode="edge")
    return square, Placement(height, width, (top, left, inner_h, inner_w), keep_size)


def as_picture(item: Picture) -> Image.Image | torch.Tensor:
    """PIL pictures and uint8 arrays become RGB PIL images; a [3,H,W] float tensor stays a tensor."""
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or not (item.ndim == 2 or item.ndim == 3 and item.shape[2] in (3, 4)):
            raise ValueError(f"expected a uint8 HxW, HxWx3 or HxWx4 array, got {item.dtype} {item.shape}")
        return to_rgb(Image.fromarray(item))
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3 or not item.is_floating_point():
            raise ValueError(f"expected a float [3,H,W] tensor in [-1, 1], got {item.dtype} {tuple(item.shape)}")
        return item.detach().to("cpu", torch.float32)
    raise TypeError(f"cannot translate a {type(item).__name__}: give a PIL image, a uint8 array or a tensor")


def prepare(item: Picture, size: int, fit: str, keep_size: bool, transform: type = ResizeTransform
            ) -> tuple[torch.Tensor, Placement]:
    """A picture as the model's [3,S,S] input in [-1, 1], and how to put the result back.

    ``transform(size)`` turns a PIL picture into the input: by default the official PyTorch test
    transform (antialiased resize); a family whose official code resizes otherwise passes its own
    (the TF code's OpenCV-style resize), which then also does the stretching.
    """
    picture = as_picture(item)
    if fit == "stretch" and isinstance(picture, Image.Image):
        return transform(size)(picture), Placement(picture.height, picture.width, (0, 0, size, size), keep_size)
    square, placement = place(picture, size, fit, keep_size)
    if isinstance(square, Image.Image):
        square = transform(size)(square)
    return square, placement


def as_list(pictures: Picture | Sequence[Picture]) -> list[Picture]:
    """One picture, a list of them, or a [B,3,H,W] batch, as a list of pictures."""
    if isinstance(pictures, (list, tuple)):
        return list(pictures)
    if isinstance(pictures, torch.Tensor) and pictures.ndim == 4:
        return list(pictures)
    return [pictures]


def restore_picture(image: torch.Tensor, placement: Placement) -> Image.Image:
    """A model-square result [3,S,S] as the RGB picture the user asked for."""
    return Image.fromarray(to_uint8_image(placement.restore(image)))
