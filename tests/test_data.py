"""Tests for unpaired.data and U-GAT-IT's augmentation and dataset opening (models.ugatit.data):
listing, decoding, validation, transforms, streams, demo data."""

from __future__ import annotations

import csv
import io
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from unpaired.data.images import ImageDataset, NamedImageDataset, ResizeTransform, list_images, load_rgb
from unpaired.data.streams import DomainStream, default_num_workers, mix_seed
from unpaired.data.two_domain import demo_dataset_path
from unpaired.errors import UserError
from unpaired.models.ugatit.data import TrainTransform, open_dataset

S = 16


@pytest.fixture(autouse=True)
def _capture_warnings(caplog):
    caplog.set_level(logging.WARNING, logger="unpaired")


def messages(caplog, text: str) -> list[str]:
    """Logged messages containing `text`."""
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


def noise_image(size=(24, 24), seed=0) -> Image.Image:
    """Random RGB image: every crop/flip of it is distinguishable."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def half_transparent_rgba() -> Image.Image:
    """Left half opaque red, right half fully transparent BLACK (the hidden colour)."""
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 10, 20))
    return image


def transparent_palette() -> Image.Image:
    """Palette image whose every pixel is the transparent index 1 (green underneath)."""
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    return image


def sixteen_bit(value: int) -> Image.Image:
    return Image.fromarray(np.full((20, 20), value, dtype=np.uint16))


def write_mixed_folder(folder: Path) -> set[str]:
    """One good image per mode/format plus bad files; returns the good relative names."""
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 12), (200, 30, 40)).save(folder / "rgb.bmp")
    Image.new("L", (20, 20), 90).save(folder / "gray.png")
    transparent_palette().save(folder / "sub" / "palette.png", transparency=1)
    half_transparent_rgba().save(folder / "alpha.webp", lossless=True)
    sixteen_bit(65535).save(folder / "deep.png")
    Image.new("CMYK", (20, 20), (0, 0, 0, 0)).save(folder / "cmyk.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "corrupt.png").write_bytes(np.random.default_rng(1).bytes(300))
    jpeg = io.BytesIO()
    noise_image((64, 64)).save(jpeg, "JPEG", quality=95)
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    return {"rgb.bmp", "gray.png", "sub/palette.png", "alpha.webp", "deep.png", "cmyk.jpg"}


# ----------------------------------------------------------------------------- listing


def test_list_images_sorted_recursive_skips_hidden_and_warns_on_non_images(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ["b.png", "a/z.JPG", "A.webp", ".hidden.png", ".cache/x.png"]:
        noise_image().save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("hi")

    assert list_images(tmp_path) == [tmp_path / "A.webp", tmp_path / "a/z.JPG", tmp_path / "b.png"]
    assert len(caplog.records) == 1
    assert "notes.txt" in caplog.records[0].getMessage()
    assert "not an image file" in caplog.records[0].getMessage()


def test_list_images_missing_or_empty_folder_is_user_error(tmp_path):
    with pytest.raises(UserError, match="missing folder .*nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(UserError, match=r"no images in .*empty \(expected image files: .*png"):
        list_images(tmp_path / "empty")


# ----------------------------------------------------------------------------- decoding


def test_mixed_modes_load_and_every_bad_file_is_named(tmp_path, caplog):
    good = write_mixed_folder(tmp_path / "trainA")
    dataset = NamedImageDataset(list_images(tmp_path / "trainA"), ResizeTransform(S), root=tmp_path / "trainA")
    assert messages(caplog, "notes.txt")
    assert messages(caplog, "corrupt.png")
    assert "corrupt.png" not in dataset.names

    loaded = [dataset[i] for i in range(len(dataset))]
    assert {name for _, name in loaded} == good  # truncated.jpg replaced by a good file
    for tensor, _ in loaded:
        assert tensor.shape == (3, S, S) and tensor.dtype == torch.float32
        assert tensor.min() >= -1 and tensor.max() <= 1
    assert len(messages(caplog, "truncated.jpg")) == 1

    dataset[dataset.names.index("truncated.jpg")]  # known bad: skipped without a new warning
    assert len(messages(caplog, "truncated.jpg")) == 1


def test_transparency_becomes_white_and_sixteen_bit_scales(tmp_path):
    half_transparent_rgba().save(tmp_path / "rgba.png")
    transparent_palette().save(tmp_path / "p.png", transparency=1)
    Image.new("LA", (4, 4), (30, 0)).save(tmp_path / "la.png")
    sixteen_bit(65535).save(tmp_path / "max.png")
    sixteen_bit(257 * 100).save(tmp_path / "mid.png")
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif")

    rgba = load_rgb(tmp_path / "rgba.png")
    assert rgba.mode == "RGB"
    assert rgba.getpixel((2, 5)) == (255, 0, 0)
    assert rgba.getpixel((15, 5)) == (255, 255, 255)
    assert load_rgb(tmp_path / "p.png").getpixel((3, 3)) == (255, 255, 255)
    assert load_rgb(tmp_path / "la.png").getpixel((1, 1)) == (255, 255, 255)
    assert load_rgb(tmp_path / "max.png").getpixel((0, 0)) == (255, 255, 255)
    assert load_rgb(tmp_path / "mid.png").getpixel((0, 0)) == (100, 100, 100)
    assert load_rgb(tmp_path / "cmyk.tif").getpixel((0, 0)) == (255, 255, 255)

    as_tensor = ResizeTransform(S)(load_rgb(tmp_path / "max.png"))
    assert torch.all(as_tensor == 1.0)
    white_half = ResizeTransform(S)(rgba)[:, :, -2:]
    assert torch.all(white_half == 1.0)


def test_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise for display
    Image.new("RGB", (20, 10), (0, 0, 255)).save(tmp_path / "phone.jpg", exif=exif)
    assert load_rgb(tmp_path / "phone.jpg").size == (10, 20)


# ----------------------------------------------------------------------------- transforms


def test_train_transform_is_official_flip_resize_crop_driven_by_generator():
    image = noise_image((20, 20))
    big = S + 30

    def resized(flip: bool) -> torch.Tensor:
        source = TF.hflip(image) if flip else image
        source = TF.resize(source, [big, big], InterpolationMode.BILINEAR, antialias=True)
        return TF.normalize(TF.to_tensor(source), [0.5] * 3, [0.5] * 3)

    candidates = {flip: resized(flip) for flip in (False, True)}
    transform = TrainTransform(S)
    found = set()
    for seed in range(30):
        out = transform(image, torch.Generator().manual_seed(seed))
        again = transform(image, torch.Generator().manual_seed(seed))
        assert torch.equal(out, again)
        matches = [
            (flip, top, left)
            for flip, full in candidates.items()
            for top in range(31)
            for left in range(31)
            if torch.equal(out, full[:, top:top + S, left:left + S])
        ]
        assert len(matches) == 1, f"seed {seed}: output is not one flip+crop of the resized image"
        found.add(matches[0])
    assert {flip for flip, _, _ in found} == {False, True}
    assert len(found) > 20


def test_resize_transform_shape_and_range():
    out = ResizeTransform(S)(noise_image((40, 30)))
    assert out.shape == (3, S, S)
    assert out.min() >= -1 and out.max() <= 1


# ----------------------------------------------------------------------------- streams


class IndexSeedDataset(Dataset):
    """Returns (index, seed) as a tensor, to check what the sampler asked for."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: tuple[int, int]) -> torch.Tensor:
        return torch.tensor(item, dtype=torch.int64)


def take(stream, count: int, start: int = 0) -> list[torch.Tensor]:
    return list(itertools.islice(iter(stream), start, start + count))


def test_stream_epochs_are_permutations_with_short_last_batch():
    stream = DomainStream(IndexSeedDataset(10), batch_size=4, seed=7, stream_id=0)
    assert stream.batches_per_epoch == 3
    batches = take(stream, 6)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    epochs = [torch.cat(batches[:3])[:, 0].tolist(), torch.cat(batches[3:])[:, 0].tolist()]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(10))
    assert epochs[0] != epochs[1]
    seeds = torch.cat(batches)[:, 1].tolist()
    assert len(set(seeds)) == len(seeds)


def test_stream_resume_continues_exactly():
    def stream(start: int) -> DomainStream:
        return DomainStream(IndexSeedDataset(10), batch_size=3, seed=1, stream_id=2, start_batch=start)

    full = take(stream(0), 14)
    for start in (1, 4, 5, 9):
        resumed = take(stream(start), 14 - start)
        assert all(torch.equal(a, b) for a, b in zip(resumed, full[start:], strict=True))


def test_stream_ids_and_seeds_change_the_stream():
    def first(seed: int, stream_id: int) -> torch.Tensor:
        return take(DomainStream(IndexSeedDataset(50), 50, seed, stream_id), 1)[0]

    assert not torch.equal(first(0, 0), first(0, 1))
    assert not torch.equal(first(0, 0), first(1, 0))
    assert torch.equal(first(3, 4), first(3, 4))


@pytest.mark.parametrize("size", [10, 11])
def test_ranks_get_disjoint_equal_shards(size):
    shards = [
        torch.cat(take(DomainStream(IndexSeedDataset(size), 4, 5, 0, rank=rank, world_size=2), 2))
        for rank in (0, 1)
    ]
    per_rank = -(-size // 2)
    assert len(shards[0]) == len(shards[1]) == per_rank
    indices = [set(shard[:, 0].tolist()) for shard in shards]
    assert indices[0] | indices[1] == set(range(size))
    assert len(indices[0] & indices[1]) == 2 * per_rank - size  # only wrap-around padding repeats
    assert not set(shards[0][:, 1].tolist()) & set(shards[1][:, 1].tolist())


def test_sample_seeds_are_stable_across_processes():
    # A fixed value: Python's salted hash() or any per-process state would break this.
    assert mix_seed("sample", 1, 2, 3, 4) == mix_seed("sample", 1, 2, 3, 4)
    assert mix_seed("sample", 0, 0, 0, 0) == 8136741022465402028


def test_workers_give_identical_batches(tmp_path):
    for i in range(7):
        noise_image(seed=i).save(tmp_path / f"{i}.png")
    dataset = ImageDataset(list_images(tmp_path), TrainTransform(8), root=tmp_path)

    def batches(workers: int) -> list[torch.Tensor]:
        return take(DomainStream(dataset, 3, seed=9, stream_id=0, num_workers=workers), 5)

    serial, parallel = batches(0), batches(2)
    assert [b.shape for b in serial] == [(3, 3, 8, 8), (3, 3, 8, 8), (1, 3, 8, 8)] + [(3, 3, 8, 8)] * 2
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_bad_batch_size_is_user_error():
    with pytest.raises(UserError, match="batch size"):
        DomainStream(IndexSeedDataset(3), batch_size=0, seed=0, stream_id=0)


def test_default_num_workers_is_small_and_non_negative():
    assert 0 <= default_num_workers() <= 4


# ----------------------------------------------------------------------------- open_dataset


def write_dataset(root: Path, domains=("trainA", "trainB", "testA", "testB")) -> None:
    for i, domain in enumerate(domains):
        (root / domain).mkdir(parents=True)
        noise_image(seed=i).save(root / domain / "x.png")


def test_open_dataset_names_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_dataset(tmp_path / "nope", S)
    write_dataset(tmp_path, ("trainA", "testA"))
    with pytest.raises(UserError) as missing:
        open_dataset(tmp_path, S)
    assert str(tmp_path / "trainB") in str(missing.value) and str(tmp_path / "testB") in str(missing.value)
    assert str(tmp_path / "trainA") not in str(missing.value)
    (tmp_path / "trainB").mkdir()
    (tmp_path / "testB").mkdir()
    noise_image().save(tmp_path / "testB" / "x.png")
    with pytest.raises(UserError, match=f"no images in {tmp_path / 'trainB'}"):
        open_dataset(tmp_path, S)


def test_open_dataset_transforms_and_test_names(tmp_path):
    write_dataset(tmp_path)
    data = open_dataset(tmp_path, S)
    assert data.train_a[(0, 123)].shape == (3, S, S)
    assert torch.equal(data.train_b[(0, 5)], data.train_b[(0, 5)])
    tensor, name = data.test_b[0]
    assert tensor.shape == (3, S, S) and name == "x.png"


# ----------------------------------------------------------------------------- demo data


def test_demo_data_is_shipped_with_licences():
    root = demo_dataset_path()
    counts = {d: len(list((root / d).glob("*.png"))) for d in ("trainA", "trainB", "testA", "testB")}
    assert counts == {"trainA": 240, "trainB": 240, "testA": 40, "testB": 40}
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 3_000_000

    with open(root / "pairs.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and list(rows[0])[:2] == ["a", "b"]
    for row in rows:
        assert (root / row["a"]).is_file() and (root / row["b"]).is_file()
        assert Path(row["a"]).name == Path(row["b"]).name

    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "subset" in readme.lower()
    assert "Domain A: OpenMoji (npm `openmoji` 17.0.0), licence CC-BY-SA-4.0." in readme
    assert "Domain B: Microsoft Fluent Emoji (Flat) (npm `@iconify-json/fluent-emoji-flat` 1.2.6), licence MIT." in readme
    assert "Attribution: emoji artwork is by the vendors named above under the licences named" in readme
    assert (root / "manifest.json").is_file()


def test_demo_data_opens_as_a_dataset():
    data = open_dataset(demo_dataset_path(), 64)
    assert (len(data.train_a), len(data.train_b), len(data.test_a), len(data.test_b)) == (240, 240, 40, 40)
    tensor, name = data.test_a[0]
    assert tensor.shape == (3, 64, 64) and name.endswith(".png")
