"""photo2cartoon's output as its authors make it: the cartoon pasted onto white with the face crop's mask.

The compositing arithmetic and the wiring of ``translate`` and ``serve`` are tested here without
MediaPipe (a stand-in preparer gives a known mask); the tests marked ``faces`` run the real
face preparation and need the faces extra (see tests/test_faces.py for its environment).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from unpaired import checkpoint as ckpt
from unpaired.cli import main
from unpaired.cli import translate as translate_cli
from unpaired.faces import FaceCrop, Square
from unpaired.models.photo2cartoon.networks import build_photo2cartoon
from unpaired.models.ugatit.options import UGATITArch

SIZE = 32


def decode_url(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))


def crop_with(mask: np.ndarray, image: Image.Image | None = None) -> FaceCrop:
    size = mask.shape[0]
    image = image or Image.new("RGB", (size, size), (0, 0, 0))
    return FaceCrop(image, mask.astype(np.float32), np.zeros((468, 2)), Square(0.0, 0.0, 1.0))


def test_on_white_is_test_py_compositing_to_within_one_level():
    """``cartoon * mask + 255 * (1 - mask)``: kept where the mask is 1, white where it is 0, blended between."""
    rng = np.random.default_rng(0)
    cartoon = rng.uniform(0, 255, (16, 16, 3)).astype(np.float32)  # test.py's float cartoon, (y + 1) * 127.5
    mask = rng.uniform(0, 1, (16, 16))
    mask[:4], mask[4:8] = 0.0, 1.0
    made = np.asarray(crop_with(mask).on_white(Image.fromarray(np.rint(cartoon).astype(np.uint8)))).astype(int)
    official = (cartoon * mask[..., None] + 255 * (1 - mask[..., None])).astype(np.uint8).astype(int)
    assert np.abs(made - official).max() <= 1
    assert (made[:4] == 255).all() and (made[4:8] == np.rint(cartoon[4:8])).all()
    half = crop_with(np.full((2, 2), 0.5)).on_white(Image.new("RGB", (2, 2), (100, 0, 255)))
    assert half.getpixel((0, 0)) == (178, 128, 255)  # (100 + 255) / 2 = 177.5 rounds to even


def test_on_white_resizes_the_mask_to_the_translation():
    mask = np.zeros((8, 8))
    mask[:, 4:] = 1.0  # the person on the right half
    made = np.asarray(crop_with(mask).on_white(Image.new("RGB", (16, 16), (10, 20, 30))))
    assert made.shape == (16, 16, 3)
    assert (made[:, :6] == 255).all() and (made[:, 10:] == (10, 20, 30)).all()


@pytest.fixture(scope="module")
def cartoon_model(tmp_path_factory):
    torch.manual_seed(0)
    arch = UGATITArch(light=True, img_size=SIZE, ch=4, n_res=1)
    path = tmp_path_factory.mktemp("p2c") / "p2c.safetensors"
    ckpt.save_weights(path, ckpt.states_of(build_photo2cartoon(arch)), "photo2cartoon", arch)
    return path


@pytest.fixture
def photo(tmp_path):
    x = np.linspace(0, 255, 48)
    pixels = np.stack(np.broadcast_arrays(x[None, :], x[:, None], 255 - x[None, :]), -1).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels[:40]).save(path)
    return path


class HalfFace:
    """A stand-in for MediaPipe's face preparation: the 'face' is the photo resized, the person
    the top half of the crop."""

    def __init__(self, size: int, background: str):
        self.size = size

    def largest(self, image: Image.Image) -> FaceCrop:
        mask = np.zeros((self.size, self.size))
        mask[: self.size // 2] = 1.0
        return crop_with(mask, image.resize((self.size, self.size)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def translate(cartoon_model, photo, out, *extra) -> np.ndarray:
    assert main(["translate", "--checkpoint", str(cartoon_model), "--input", str(photo), "--out", str(out),
                 "--device", "cpu", *extra]) == 0
    return np.asarray(Image.open(out / "photo.png").convert("RGB"))


def test_translate_pastes_the_cartoon_on_white_unless_raw_output(cartoon_model, photo, tmp_path, monkeypatch):
    monkeypatch.setattr(translate_cli, "FacePreparer", HalfFace)
    finished = translate(cartoon_model, photo, tmp_path / "finished")
    raw = translate(cartoon_model, photo, tmp_path / "raw", "--raw-output")
    assert finished.shape == raw.shape == (SIZE, SIZE, 3)
    assert (finished[SIZE // 2:] == 255).all() and (raw[SIZE // 2:] != 255).any()
    assert np.array_equal(finished[: SIZE // 2], raw[: SIZE // 2])
    with_heatmap = tmp_path / "heatmap"
    translate(cartoon_model, photo, with_heatmap, "--heatmap")
    assert (np.asarray(Image.open(with_heatmap / "photo_heatmap.png"))[SIZE // 2:] != 255).any(), \
        "the attention overlay is not pasted onto white"


def test_raw_output_without_prepared_faces_is_refused_in_one_line(cartoon_model, photo, tmp_path, capsys):
    assert main(["translate", "--checkpoint", str(cartoon_model), "--input", str(photo), "--out", str(tmp_path),
                 "--device", "cpu", "--faces", "off", "--raw-output"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--raw-output" in error and "faces are not prepared here" in error


# ----------------------------------------------------------------------------- with MediaPipe


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    pytest.importorskip("mediapipe", reason="needs the faces extra: pip install 'unpaired[faces]'")
    skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its sample photos")
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


@pytest.mark.faces
def test_translate_of_a_real_photo_is_on_white_where_the_segmentation_says(cartoon_model, astronaut, tmp_path):
    from unpaired.faces import FacePreparer

    finished = translate(cartoon_model, astronaut, tmp_path / "finished")
    raw = translate(cartoon_model, astronaut, tmp_path / "raw", "--raw-output")
    with FacePreparer(SIZE, "white") as faces:
        crop = faces.largest(Image.open(astronaut).convert("RGB"))
    assert np.array_equal(finished, np.asarray(crop.on_white(Image.fromarray(raw))))
    background = crop.mask < 0.02
    assert 0.05 < background.mean() < 0.95
    assert (finished[background] >= 250).all() and not (raw[background] >= 250).all()


@pytest.mark.faces
def test_serve_cuts_the_face_out_and_pastes_the_cartoon_on_white(cartoon_model, astronaut):
    from unpaired.faces import FacePreparer
    from unpaired.serve.app import answer_upload
    from unpaired.serve.shelf import ModelShelf
    from unpaired.serve.uploads import MemoryBudget, UploadLimits

    shelf = ModelShelf({"p2c": cartoon_model}, device="cpu")
    controls = shelf.controls("p2c")
    assert controls.faces and "raw" in controls.query_keys() and "cut out first" in controls.note
    limits = UploadLimits()
    replies = [answer_upload(shelf, limits, MemoryBudget(limits.memory_budget, 1.0), astronaut.read_bytes(), query)
               for query in ({"model": "p2c"}, {"model": "p2c", "raw": "1"})]
    finished, raw = (np.asarray(decode_url(r["outputs"][0]["image"]).convert("RGB")) for r in replies)
    with FacePreparer(SIZE, "white") as faces:
        crop = faces.largest(Image.open(astronaut).convert("RGB"))
    assert decode_url(replies[0]["input"]).size == (SIZE, SIZE)
    assert np.array_equal(finished, np.asarray(crop.on_white(Image.fromarray(raw))))
    assert not np.array_equal(finished, raw)
    shelf.close()

