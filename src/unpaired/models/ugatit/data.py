"""U-GAT-IT's training data: two-domain folders with the official augmentation."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ...data.images import to_model_tensor
from ...data.two_domain import TwoDomainData, open_two_domain

CROP_MARGIN = 30  # official U-GAT-IT: resize to S+30, then random-crop S


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
        return to_model_tensor(TF.crop(image, top, left, self.size, self.size))


def open_dataset(root: Path, img_size: int) -> TwoDomainData:
    """ROOT/{trainA,trainB,testA,testB} with the official training augmentation."""
    return open_two_domain(root, img_size, TrainTransform(img_size))
