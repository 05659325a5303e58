"""Two-domain image folders, the layout of the official U-GAT-IT code.

ROOT/trainA, ROOT/trainB, ROOT/testA, ROOT/testB, each holding image files (searched
recursively). The training augmentation is the model family's (``train_transform``); the test
images are resized as the official test phase does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .images import ImageDataset, NamedImageDataset, ResizeTransform, Transform, dataset_root, list_images

DOMAINS = ("trainA", "trainB", "testA", "testB")
DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data" / "emoji64"


@dataclass(frozen=True)
class TwoDomainData:
    """The four datasets of one two-domain folder, transforms already attached."""

    root: Path
    img_size: int
    train_a: ImageDataset
    train_b: ImageDataset
    test_a: NamedImageDataset
    test_b: NamedImageDataset


def open_two_domain(root: Path, img_size: int, train_transform: Transform) -> TwoDomainData:
    """Open ROOT/{trainA,trainB,testA,testB}, failing with the exact folder at fault."""
    root = dataset_root(root, img_size)
    missing = [str(root / domain) for domain in DOMAINS if not (root / domain).is_dir()]
    if missing:
        raise UserError(f"missing folder {', '.join(missing)}: a dataset needs {', '.join(DOMAINS)}")
    train, test = train_transform, ResizeTransform(img_size)

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
    """The 64x64 emoji demo data set shipped inside the package (see its README for licences)."""
    if not DEMO_DATA.is_dir():
        raise UserError(f"demo data missing at {DEMO_DATA}: reinstall the package with its data files")
    return DEMO_DATA
