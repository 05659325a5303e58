"""Face crops framed the way photo2cartoon was trained: find the face, level the eyes, crop with
photo2cartoon's margins and cut the person out onto white.

A translation model only works on inputs framed like its training data, so this module follows
the framing of minivision-ai/photo2cartoon (utils/face_detect.py, utils/preprocess.py):
  * rotate so the line through the eyes is horizontal;
  * take the box around the brows and the jaw line (the outline of dlib's 68 landmarks), grow it
    by 0.8 of its height above, 0.3 of its height below and 0.3 of its width on either side;
  * make it square by growing its shorter side about the centre; what lies outside the photo
    is white;
  * segment the person and composite onto white.

Deliberate differences: the models are MediaPipe's (they ship inside its wheel and run offline,
where the original needs dlib, face_alignment and a separately downloaded TensorFlow graph);
the eye line joins the eye centres instead of the outer corners (one misplaced corner tilts it
less); rotation, crop and resize are one resampling step (area-averaged when shrinking) instead
of rotating the whole photo first.

MediaPipe is the optional extra ``unpaired[faces]``; it is imported only when a
``FacePreparer`` is built.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import guard
from .data.images import DECODE_ERRORS, list_images, load_rgb, to_rgb
from .errors import UserError
from .files import write_text_atomic
from .viz import save_png

logger = logging.getLogger("unpaired")

BACKGROUNDS = ("white", "keep")
INSTALL_HINT = "pip install 'unpaired[faces]'"
SKIPPED_CSV = "skipped.csv"

# MediaPipe face-mesh indices (its canonical face model numbering). "Right" is the subject's
# right, which is on the left of the photo.
RIGHT_EYE = (33, 133)  # outer, inner corner
LEFT_EYE = (362, 263)  # inner, outer corner
BROWS = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 336, 296, 334, 293, 300, 285, 295, 282, 283, 276)
JAW = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
       377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356)  # ear to ear through the chin
OUTLINE = BROWS + JAW  # the points dlib's 68 landmarks span, which photo2cartoon's margins refer to

MARGIN_ABOVE, MARGIN_BELOW, MARGIN_SIDES = 0.8, 0.3, 0.3  # photo2cartoon's, in outline heights/widths
RIVAL_AREA = 0.5  # a second face at least this fraction of the largest one's area is not "background"
MAX_UPSCALE = 2.0  # prepare_folder skips faces that would be enlarged more than this
MESH_CONTEXT = 2.0  # face mesh sees a square this many detection boxes wide, so the whole head fits
MESH_INPUT = 256  # pixels of that square
MESH_FACES = 3  # faces the mesh may find in that square (neighbours can be in view)


@dataclass(frozen=True)
class Square:
    """A square region of a photo, turned by ``angle`` radians: where a crop is cut from.

    The square's x axis points along (cos angle, sin angle) in the photo (y down), so turning by
    the angle of the eye line makes the eyes level in the crop.
    """

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def _axes(self) -> np.ndarray:
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        return np.array([[cos, -sin], [sin, cos]])  # columns: crop x and y axes in the photo

    def to_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Photo pixel coordinates -> coordinates in the size x size crop."""
        offset = np.asarray(points, dtype=np.float64) - (self.cx, self.cy)
        return offset @ self._axes() * (size / self.side) + size / 2

    def from_crop(self, points: np.ndarray, size: int) -> np.ndarray:
        """Crop coordinates -> photo pixel coordinates (inverse of ``to_crop``)."""
        offset = (np.asarray(points, dtype=np.float64) - size / 2) * (self.side / size)
        return offset @ self._axes().T + (self.cx, self.cy)

    def sample(self, image: Image.Image, size: int) -> Image.Image:
        """The square resampled to size x size; parts outside the photo are white.

        When shrinking, the photo is first box-reduced by the integer part of the ratio, so the
        final bicubic step shrinks less than 2x and does not alias.
        """
        factor = max(1, int(self.side // size))
        if factor > 1:
            image = image.reduce(factor)
        square = Square(self.cx / factor, self.cy / factor, self.side / factor, self.angle)
        linear = square._axes() * (square.side / size)
        shift = np.array([square.cx, square.cy]) - linear @ (size / 2, size / 2)
        coeffs = (linear[0, 0], linear[0, 1], shift[0], linear[1, 0], linear[1, 1], shift[1])
        return image.transform((size, size), Image.Transform.AFFINE, coeffs,
                               resample=Image.Resampling.BICUBIC, fillcolor=(255, 255, 255))


@dataclass(frozen=True)
class Face:
    """One detected face: its box in photo pixels (x0, y0, x1, y1) and detector confidence."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass(frozen=True)
class FaceCrop:
    """A prepared face: the crop, the person mask and the face landmarks in crop pixels.

    ``mask`` is the person probability (size x size, 0..1) even with ``background="keep"``;
    photo2cartoon's inference pastes the generated cartoon onto white with it too (``on_white``).
    """

    image: Image.Image
    mask: np.ndarray
    landmarks: np.ndarray
    square: Square

    def on_white(self, translation: Image.Image) -> Image.Image:
        """A translation of this crop pasted onto white with the person mask, as photo2cartoon's
        test.py finishes its cartoon (``cartoon * mask + 255 * (1 - mask)``): the model draws
        something everywhere, but only the person was in its training pictures.

        The mask is resized (bilinear) to the translation when their sizes differ. test.py
        blends the float output and truncates; this blends the 8-bit picture and rounds, as the
        rest of the package does, so values can differ from test.py's by one level.
        """
        mask = self.mask.astype(np.float32)
        if mask.shape != (translation.height, translation.width):
            mask = np.asarray(Image.fromarray(mask, "F").resize(translation.size, Image.Resampling.BILINEAR))
        return Image.fromarray(on_white(np.asarray(translation.convert("RGB")), mask))


def eye_centres(landmarks: np.ndarray) -> np.ndarray:
    """(2, 2): centre of the eye on the left of the image, then the one on the right."""
    return np.stack([landmarks[list(RIGHT_EYE)].mean(0), landmarks[list(LEFT_EYE)].mean(0)])


def face_square(landmarks: np.ndarray) -> Square:
    """photo2cartoon's crop for a face with these (468, 2) landmarks, in photo pixels."""
    right, left = eye_centres(landmarks)
    (mid_x, mid_y), (dx, dy) = (right + left) / 2, left - right
    # A unit square shown at size 1 keeps photo pixel scale: its crop frame is the photo turned
    # about the eyes' midpoint so that they are level.
    level = Square(mid_x, mid_y, side=1.0, angle=math.atan2(dy, dx))
    outline = level.to_crop(landmarks[list(OUTLINE)], 1)
    (x0, y0), (x1, y1) = outline.min(0), outline.max(0)
    width, height = x1 - x0, y1 - y0
    x0, x1 = x0 - MARGIN_SIDES * width, x1 + MARGIN_SIDES * width
    y0, y1 = y0 - MARGIN_ABOVE * height, y1 + MARGIN_BELOW * height
    side = max(x1 - x0, y1 - y0)
    centre = level.from_crop([[(x0 + x1) / 2, (y0 + y1) / 2]], 1)[0]
    return Square(*centre, side=side, angle=level.angle)


def on_white(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Composite an (H, W, 3) uint8 image onto white with a (H, W) 0..1 mask."""
    alpha = np.clip(mask, 0.0, 1.0)[..., None]
    return np.rint(image * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError as exc:
        raise UserError(f"face preparation needs MediaPipe ({exc}); install it with: {INSTALL_HINT}") from None
    return mediapipe


class FacePreparer:
    """Detects, aligns, crops and segments faces with MediaPipe's bundled models.

    Building the three MediaPipe graphs takes a moment, so keep one preparer for many photos;
    use it as a context manager (or call ``close``) to free them.
    """

    def __init__(self, size: int = 256, background: str = "white", min_score: float = 0.5):
        if size < 16:
            raise UserError(f"face size must be at least 16 pixels, got {size}")
        if background not in BACKGROUNDS:
            raise UserError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
        solutions = _import_mediapipe().solutions
        self.size = size
        self.background = background
        # Full-range model: finds small faces in group photos as well as close-ups.
        self._detector = solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_score)
        self._mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MESH_FACES)
        self._segmenter = solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def close(self) -> None:
        for graph in (self._detector, self._mesh, self._segmenter):
            graph.close()

    def __enter__(self) -> FacePreparer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: Image.Image) -> list[Face]:
        """Faces in an RGB photo, largest first."""
        width, height = image.size
        found = self._detector.process(np.asarray(image)).detections or []
        faces = []
        for detection in found:
            box = detection.location_data.relative_bounding_box
            x0, y0 = box.xmin * width, box.ymin * height
            faces.append(Face((x0, y0, x0 + box.width * width, y0 + box.height * height), detection.score[0]))
        return sorted(faces, key=lambda face: face.area, reverse=True)

    def landmarks(self, image: Image.Image, face: Face) -> np.ndarray | None:
        """The face's (468, 2) mesh landmarks in photo pixels, or None if the mesh finds no face.

        The mesh runs on a square around the detection (its own detector is short-range and
        would miss small faces in a large photo); of the faces it finds there (a neighbour may
        be in view), the one centred nearest the detection is this face.
        """
        x0, y0, x1, y1 = face.box
        around = Square((x0 + x1) / 2, (y0 + y1) / 2, MESH_CONTEXT * max(x1 - x0, y1 - y0))
        found = self._mesh.process(np.asarray(around.sample(image, MESH_INPUT))).multi_face_landmarks
        if not found:
            return None
        meshes = [np.array([(p.x, p.y) for p in mesh.landmark]) * MESH_INPUT for mesh in found]
        nearest = min(meshes, key=lambda points: np.linalg.norm(points.mean(0) - MESH_INPUT / 2))
        return around.from_crop(nearest, MESH_INPUT)

    def crop(self, image: Image.Image, landmarks: np.ndarray) -> FaceCrop:
        """The photo2cartoon crop of the face with these landmarks, background as configured."""
        square = face_square(landmarks)
        pixels = np.asarray(square.sample(image, self.size))
        mask = self._segmenter.process(pixels).segmentation_mask
        if self.background == "white":
            pixels = on_white(pixels, mask)
        return FaceCrop(Image.fromarray(pixels), mask, square.to_crop(landmarks, self.size), square)

    def largest(self, image: Image.Image) -> FaceCrop:
        """The crop of the largest face; a UserError when there is none."""
        image = to_rgb(image)
        faces = self.detect(image)
        points = self.landmarks(image, faces[0]) if faces else None
        if points is None:
            raise UserError("no face found in the image")
        return self.crop(image, points)


def prepare_face(image: Image.Image, size: int = 256, background: str = "white") -> Image.Image:
    """The largest face of a photo, framed like photo2cartoon's training data.

    Builds a fresh ``FacePreparer``; for many photos keep one and call its ``largest``.
    """
    with FacePreparer(size, background) as preparer:
        return preparer.largest(image).image


# ----------------------------------------------------------------------------- folders


@dataclass
class FolderReport:
    """What ``prepare_folder`` did: files written and (input path, reason) for each skip."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def skip(self, path: Path, reason: str) -> None:
        logger.warning("skipping %s: %s", path, reason)
        self.skipped.append((path, reason))


def choose_faces(faces: list[Face], every: bool) -> tuple[list[tuple[int, Face]], str | None]:
    """(number, face) pairs to crop, numbered 1.. from the left, or a reason to skip the photo.

    Without ``every``, the largest face is kept when every other face is much smaller
    (bystanders); two faces of similar size make the photo ambiguous for a one-face dataset.
    """
    if not faces:
        return [], "no face"
    numbered = list(enumerate(sorted(faces, key=lambda face: face.box[0] + face.box[2]), start=1))
    if every:
        return numbered, None
    rivals = [face for face in faces[1:] if face.area >= RIVAL_AREA * faces[0].area]
    if rivals:
        return [], f"several faces ({len(rivals) + 1}); use --all to keep each"
    return [pair for pair in numbered if pair[1] is faces[0]], None


def _image_files(source: Path) -> list[tuple[Path, Path]]:
    """(file, path relative to the input) for every image of a file or folder input."""
    if source.is_file():
        return [(source, Path(source.name))]
    return [(path, path.relative_to(source)) for path in list_images(source)]


def _crop_path(output: Path, relative: Path, suffix: str = "") -> Path:
    return output / relative.with_name(f"{relative.stem}{suffix}.png")


def _check_outputs(source: Path, output: Path, files: list[tuple[Path, Path]], every: bool) -> guard.Made:
    """Refuse, before any crop is written, outputs that are inputs or files of the user's: the crop
    of every photo, with ``every`` also the NAME_N.png already there, and skipped.csv."""
    made = guard.Made(output)
    planned = [output / SKIPPED_CSV]
    numbered: dict[Path, dict[str, list[Path]]] = {}  # each output folder listed once
    for _, relative in files:
        crop = _crop_path(output, relative)
        planned.append(crop)
        if every:
            if crop.parent not in numbered:
                numbered[crop.parent] = _numbered_crops(crop.parent)
            planned += numbered[crop.parent].get(relative.stem, [])
    guard.check([source], files=list(dict.fromkeys(planned)), ours=made.owns)
    return made


def _numbered_crops(folder: Path) -> dict[str, list[Path]]:
    """The NAME_N....png files in ``folder``, under every NAME they match as ``NAME_[0-9]*.png``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*_[0-9]*.png")):
        for underscore in re.finditer(r"_(?=[0-9])", path.name):
            found.setdefault(path.name[:underscore.start()], []).append(path)
    return found


def prepare_folder(source: Path, output: Path, size: int = 256, background: str = "white",
                   every: bool = False) -> FolderReport:
    """Turn a file or folder of photos into a training folder of face crops (PNG).

    Outputs keep the input's relative path with a .png suffix, ``_N`` added when a photo gives
    several faces (``every``). Photos without a usable face are listed in ``skipped.csv``.
    """
    source, output = Path(source), Path(output)
    if not source.exists():
        raise UserError(f"missing input {source}")
    files = _image_files(source)
    made = _check_outputs(source, output, files, every)
    report = FolderReport()
    owners: dict[Path, Path] = {}
    with FacePreparer(size, background) as preparer:
        for path, relative in files:
            try:
                image = load_rgb(path)
            except DECODE_ERRORS as exc:
                report.skip(path, f"unreadable image ({exc})")
                continue
            faces = preparer.detect(image)
            chosen, reason = choose_faces(faces, every)
            if reason:
                report.skip(path, reason)
            for number, face in chosen:
                suffix = f"_{number}" if len(faces) > 1 and every else ""
                target = _crop_path(output, relative, suffix)
                label = f"face {number}: " if suffix else ""
                if target in owners:
                    report.skip(path, f"{label}output name {target.name} already used by {owners[target]}")
                    continue
                points = preparer.landmarks(image, face)
                if points is None:
                    report.skip(path, f"{label}no face landmarks")
                    continue
                side = face_square(points).side
                if side * MAX_UPSCALE < size:
                    report.skip(path, f"{label}too small (face crop {side:.0f} px, needs {size / MAX_UPSCALE:.0f})")
                    continue
                owners[target] = path
                report.written.append(save_png(np.asarray(preparer.crop(image, points).image), target))
                made.add(target)
    write_skipped(output / SKIPPED_CSV, report.skipped)
    made.add(output / SKIPPED_CSV)
    return report


def write_skipped(path: Path, skipped: list[tuple[Path, str]]) -> None:
    """The skip list as CSV with a header (path, reason); written even when empty, so a stale
    list from an earlier run never survives."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows((str(path), reason) for path, reason in skipped)
    write_text_atomic(path, text.getvalue())
