"""Face preparation on real photos (scikit-image's astronaut) with MediaPipe's bundled models.

Needs the ``faces`` extra (MediaPipe) and scikit-image for the photos; the whole module is
skipped without them so the core test run passes on a plain install. Marked ``faces``: the
README's test command leaves it out (``-m "not faces"``) and ``tools/test-faces`` runs it in
its own environment (mediapipe 0.10.21 needs numpy < 2).
"""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.faces

pytest.importorskip("mediapipe", reason="needs the faces extra: pip install 'unpaired[faces]'")
skimage_data = pytest.importorskip("skimage.data", reason="needs scikit-image for its sample photos")

from unpaired.cli import main  # noqa: E402
from unpaired.errors import UserError  # noqa: E402
from unpaired.faces import (  # noqa: E402
    INSTALL_HINT,
    SKIPPED_CSV,
    Face,
    FacePreparer,
    Square,
    choose_faces,
    eye_centres,
    face_square,
    prepare_face,
)

SIZE = 128


@pytest.fixture(scope="module")
def preparer():
    with FacePreparer(SIZE) as prep:
        yield prep


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


def rotated(image: Image.Image, degrees: float) -> Image.Image:
    """Turned counter-clockwise as shown, grey outside (not white, so white means segmented)."""
    return image.rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))


def side_by_side(*images: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), (128, 128, 128))
    x = 0
    for im in images:
        canvas.paste(im, (x, 0))
        x += im.width
    return canvas


def largest_landmarks(prep: FacePreparer, image: Image.Image) -> np.ndarray:
    faces = prep.detect(image)
    assert faces, "no face detected"
    points = prep.landmarks(image, faces[0])
    assert points is not None
    return points


# ----------------------------------------------------------------------------- geometry


def test_square_maps_points_where_sample_puts_them():
    """A dot at a photo point lands in the sampled crop where to_crop says (turned, scaled)."""
    photo = np.full((200, 300, 3), 255, np.uint8)
    photo[118:123, 78:83] = 0  # dot centred on pixel (80, 120), i.e. point (80.5, 120.5)
    square = Square(100.0, 110.0, side=90.0, angle=math.radians(30))
    crop = np.asarray(square.sample(Image.fromarray(photo), 60)).mean(2)
    expected = square.to_crop([[80.5, 120.5]], 60)[0]
    ys, xs = np.nonzero(crop < 128)
    found = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    assert np.abs(found - expected).max() < 1.0
    np.testing.assert_allclose(square.from_crop(square.to_crop([[3.0, 4.0]], 60), 60), [[3.0, 4.0]])
    assert (crop[:3, :3] == 255).all(), "outside the photo must be white"


def test_sample_shrinks_by_averaging_without_shifting():
    """Shrinking 10x keeps a ramp (red) where the geometry says and averages 1-pixel stripes
    (green) to grey instead of aliasing them."""
    photo = np.zeros((1000, 2000, 3), np.uint8)
    photo[..., 0] = np.linspace(0, 255, 2000)[None, :]
    photo[:, ::2, 1] = 255
    crop = np.asarray(Square(1000.3, 500.0, side=1000.0).sample(Image.fromarray(photo), 100)).astype(float)
    expected = np.linspace(0, 255, 2000)[np.arange(500, 1500, 10) + 5]
    assert np.abs(crop[50, :, 0] - expected).max() < 3
    assert np.abs(crop[10:90, 10:90, 1] - 127.5).max() < 8


# ----------------------------------------------------------------------------- faces


def test_astronaut_crop_is_aligned_framed_and_cut_out(preparer, astronaut):
    crop = preparer.crop(astronaut, largest_landmarks(preparer, astronaut))
    assert crop.image.size == (SIZE, SIZE) and crop.image.mode == "RGB"
    # Landmarks found again on the crop itself: eyes level and where photo2cartoon's margins put them.
    right, left = eye_centres(largest_landmarks(preparer, crop.image))
    assert abs(left[1] - right[1]) < 0.015 * SIZE
    assert abs((left[0] + right[0]) / 2 - SIZE / 2) < 0.04 * SIZE
    assert 0.40 * SIZE < right[1] < 0.52 * SIZE
    assert 0.18 * SIZE < left[0] - right[0] < 0.30 * SIZE
    np.testing.assert_allclose(eye_centres(crop.landmarks), [right, left], atol=0.02 * SIZE)
    person = crop.mask > 0.5
    assert 0.2 < person.mean() < 0.9
    pixels = np.asarray(crop.image)
    background = crop.mask < 0.02
    assert background.mean() > 0.05
    assert (pixels[background] >= 250).all(), "background must be white"
    assert pixels[person].mean() < 200, "the person is not washed out"


@pytest.mark.parametrize("degrees", [15, -20])
def test_rotated_photo_is_levelled(preparer, astronaut, degrees):
    upright = face_square(largest_landmarks(preparer, astronaut))
    crop = preparer.crop(rotated(astronaut, degrees), largest_landmarks(preparer, rotated(astronaut, degrees)))
    # PIL turns counter-clockwise as shown, which is a negative angle with y pointing down.
    assert math.degrees(crop.square.angle - upright.angle) == pytest.approx(-degrees, abs=2)
    right, left = eye_centres(largest_landmarks(preparer, crop.image))
    assert abs(left[1] - right[1]) < 0.02 * SIZE
    assert crop.square.side == pytest.approx(upright.side, rel=0.06)


def test_mirrored_photo_gives_mirrored_crop(preparer, astronaut):
    mirrored = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = preparer.crop(astronaut, largest_landmarks(preparer, astronaut))
    b = preparer.crop(mirrored, largest_landmarks(preparer, mirrored))
    flipped_back = np.asarray(b.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), dtype=float)
    assert np.abs(flipped_back - np.asarray(a.image, dtype=float)).mean() < 20


def test_keep_background_leaves_the_photo(astronaut):
    with FacePreparer(SIZE, background="keep") as keep:
        crop = keep.largest(astronaut)
    background = crop.mask < 0.02
    assert np.asarray(crop.image)[background].mean() < 200  # the astronaut's backdrop, not white


def test_no_face_in_coffee_or_flat_colour(preparer):
    assert preparer.detect(Image.fromarray(skimage_data.coffee())) == []
    assert preparer.detect(Image.new("RGB", (200, 200), (90, 140, 200))) == []
    with pytest.raises(UserError, match="no face"):
        preparer.largest(Image.fromarray(skimage_data.coffee()))


def test_prepare_face_returns_the_largest_face(astronaut):
    small = astronaut.resize((256, 256), Image.Resampling.LANCZOS)
    image = prepare_face(side_by_side(small, astronaut), size=64)
    assert image.size == (64, 64)
    with FacePreparer(64) as prep:
        expected = prep.largest(astronaut).image
    assert np.abs(np.asarray(image, float) - np.asarray(expected, float)).mean() < 12


def test_choose_faces_skips_rivals_but_not_bystanders():
    big, rival, bystander = Face((0, 0, 100, 100), 0.9), Face((300, 0, 380, 80), 0.9), Face((200, 0, 230, 30), 0.9)
    assert choose_faces([], every=False) == ([], "no face")
    assert choose_faces([big, bystander], every=False) == ([(1, big)], None)
    chosen, reason = choose_faces([big, rival, bystander], every=False)
    assert chosen == [] and "several faces (2)" in reason
    assert choose_faces([big, rival, bystander], every=True) == ([(1, big), (2, bystander), (3, rival)], None)


def test_missing_mediapipe_is_a_one_line_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(UserError, match=INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        FacePreparer()


# ----------------------------------------------------------------------------- command line


def read_skipped(folder) -> dict[str, str]:
    with open(folder / SKIPPED_CSV, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "reason"]
    return {path.rsplit("/", 1)[-1]: reason for path, reason in rows[1:]}


def test_cli_writes_training_folder_and_skip_report(tmp_path, astronaut, caplog):
    raw = tmp_path / "raw"
    (raw / "people").mkdir(parents=True)
    astronaut.save(raw / "astronaut.jpg", quality=95)
    rotated(astronaut, 15).save(raw / "people" / "tilted.png")
    side_by_side(astronaut, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).save(raw / "pair.png")
    astronaut.resize((128, 128)).save(raw / "tiny.png")
    Image.fromarray(skimage_data.coffee()).save(raw / "coffee.png")
    (raw / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "faces"

    assert main(["prepare-faces", "--input", str(raw), "--out", str(out), "--img-size", str(SIZE)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["astronaut.png", "people/tilted.png"]
    for name in written:
        assert Image.open(out / name).size == (SIZE, SIZE)
    skipped = read_skipped(out)
    assert set(skipped) == {"pair.png", "tiny.png", "coffee.png", "broken.jpg"}
    assert skipped["coffee.png"] == "no face"
    assert skipped["pair.png"].startswith("several faces (2)")
    assert skipped["tiny.png"].startswith("too small")
    assert skipped["broken.jpg"].startswith("unreadable image")
    assert "skipping" in caplog.text and "broken.jpg" in caplog.text  # each skip is reported as it happens

    everyone = tmp_path / "everyone"  # the old spellings --output and --size are aliases
    assert main(["prepare-faces", "--input", str(raw), "--output", str(everyone), "--size", str(SIZE),
                 "--all", "--background", "keep"]) == 0
    names = sorted(p.name for p in everyone.rglob("*.png"))
    assert names == ["astronaut.png", "pair_1.png", "pair_2.png", "tilted.png"]
    left, right = (np.asarray(Image.open(everyone / n), float) for n in ("pair_1.png", "pair_2.png"))
    assert np.abs(left[:, ::-1] - right).mean() < 20, "pair_1 is the left face, pair_2 its mirror image"


def test_cli_user_errors(tmp_path, astronaut, capsys):
    assert main(["prepare-faces", "--input", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "missing input" in capsys.readouterr().err
    raw = tmp_path / "raw"
    raw.mkdir()
    Image.fromarray(skimage_data.coffee()).save(raw / "coffee.png")
    assert main(["prepare-faces", "--input", str(raw), "--out", str(raw / "faces")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert main(["prepare-faces", "--input", str(raw), "--out", str(tmp_path / "o")]) == 2
    assert "no usable face" in capsys.readouterr().err
    assert read_skipped(tmp_path / "o") == {"coffee.png": "no face"}
