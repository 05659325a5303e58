"""The models a page offers: their checkpoints, translators loaded on first use, the controls
each one gets on the page, and what one request asks of it.

Nothing here knows a model by name. What the page offers follows from what the model's family
and translator expose: a ``direction`` load option gives the A→B / B→A choice, a ``domain``
call option the target domain (the translator's ``domains``), ``seed`` and ``num`` the
latent-guided styles, ``reference`` the reference-guided one; ``has_attention`` shows the
attention map, ``face_crops`` cuts the face out first as the model's training data was.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import UserError
from ..faces import FaceCrop, FacePreparer
from ..inference.loading import load_translator, looks_like_model
from ..inference.translator import TranslationOutput, Translator
from ..models.registry import family
from .uploads import Rejected

log = logging.getLogger("unpaired")

DIRECTIONS = ("A2B", "B2A")
GUIDES = {"latent": ("seed", "num"), "reference": ("reference",)}  # style source -> the call options it takes
MAX_OUTPUTS = 8  # latent-guided outputs per request: each is a full forward pass under the model lock
FACE_BYTES_PER_PIXEL = 10  # finding a face in the whole photo (MediaPipe and its arrays): 9.8 measured at 16 MP


def find_checkpoints(path: Path) -> dict[str, Path]:
    """Menu name → checkpoint: ``path`` itself when it is one, else the checkpoints directly in it.

    A checkpoint is a run folder, a checkpoint folder or a weights file (.safetensors, an
    official .pt or an exported .onnx); anything else in the folder is ignored.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_file() or looks_like_model(path):
        return {path.name: path}
    found = {p.name: p for p in sorted(path.iterdir()) if not p.name.startswith(".") and looks_like_model(p)}
    if not found:
        raise UserError(f"{path} holds no checkpoints: expected run folders, checkpoint folders, weight files "
                        f"(.safetensors, .onnx) or official checkpoints")
    return found


# ----------------------------------------------------------------------------- controls and requests


@dataclass(frozen=True)
class Controls:
    """What the page offers for one model (``api/model``), read off its family and translator.

    Empty ``directions``, ``domains`` or ``guides`` mean the page shows no such choice.
    ``faces``: faces are cut out first and the outputs pasted onto white with the person mask
    (``raw`` keeps them as the model made them); ``note`` says what the page should know.
    """

    model: str
    family: str
    directions: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    guides: tuple[str, ...] = ()
    max_outputs: int = MAX_OUTPUTS
    attention: bool = False
    faces: bool = False
    note: str = ""

    def json(self) -> dict[str, Any]:
        return asdict(self)

    def query_keys(self) -> set[str]:
        """The query parameters of ``api/translate`` this model takes."""
        keys = {"model"}
        if self.directions:
            keys.add("direction")
        if self.domains:
            keys.add("domain")
        if "latent" in self.guides:
            keys |= {"seed", "num"}
        if "reference" in self.guides:
            keys.add("reference_bytes")
        if self.faces:
            keys.add("raw")
        return keys


def controls_of(name: str, translator: Translator, faces: FaceCutter) -> Controls:
    """A loaded model's controls: its family's options and its translator's abilities."""
    model = family(translator.model)
    takes = set(model.call_options)
    face_ready = translator.face_crops and faces.ready(translator.img_size)
    if face_ready:
        note = ("The face is found, aligned and cut out first, and the result pasted onto white with its mask, "
                "as the model's authors make it.")
    elif translator.face_crops:
        note = f"Pictures are translated as they are, not cut out to the face as the model was trained: {faces.missing}"
    else:
        note = ""
    return Controls(
        model=name, family=model.name,
        directions=DIRECTIONS if "direction" in model.load_options else (),
        domains=tuple(translator.domains) if "domain" in takes else (),
        guides=tuple(guide for guide, options in GUIDES.items() if takes.issuperset(options)),
        attention=translator.has_attention, faces=face_ready, note=note)


def _number(query: Mapping[str, str], key: str, default: int, low: int, high: int | None = None) -> int:
    text = query.get(key, str(default))
    if text.isascii() and text.isdigit() and low <= int(text) and (high is None or int(text) <= high):
        return int(text)
    allowed = f"from {low} to {high} (the page makes at most {high} at once)" if high else f"{low} or more"
    raise Rejected(400, f"{key} must be a whole number {allowed}, got {text!r}")


def _choice(query: Mapping[str, str], key: str, choices: tuple[str, ...], default: str | None) -> str | None:
    if not choices:
        return None
    value = query.get(key, default)
    if value is None:
        raise Rejected(400, f"choose a {key}: one of {', '.join(choices)}")
    if value not in choices:
        raise Rejected(400, f"unknown {key} {value!r}: use {' or '.join(choices)}")
    return value


@dataclass(frozen=True)
class Ask:
    """One request's choices, checked against its model's controls before any pixel is decoded."""

    direction: str | None = None
    domain: str | None = None
    seed: int = 0
    num: int = 1
    reference: bool = False
    raw: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str], controls: Controls) -> Ask:
        takes = controls.query_keys()
        extra = sorted(set(query) - takes)
        if extra:
            raise Rejected(400, f"{', '.join(extra)} does not apply to {controls.model}, a {controls.family} model "
                                f"(it takes {', '.join(sorted(takes))})")
        reference = "reference_bytes" in query
        if reference and ("seed" in query or "num" in query):
            raise Rejected(400, "a reference picture gives one style: seed and num are for latent-guided translation")
        return cls(direction=_choice(query, "direction", controls.directions, "A2B"),
                   domain=_choice(query, "domain", controls.domains, None),
                   seed=_number(query, "seed", 0, 0), num=_number(query, "num", 1, 1, controls.max_outputs),
                   reference=reference, raw=query.get("raw") == "1")

    def call(self, reference: Image.Image | None) -> dict[str, Any]:
        """The translator's call options for this request."""
        if self.domain is None:
            return {}
        if self.reference:
            return {"domain": self.domain, "reference": reference}
        return {"domain": self.domain, "seed": self.seed, "num": self.num}

    @property
    def label(self) -> str:
        """What was done, for the page's status line."""
        if self.domain is None:
            return self.direction or "translation"
        if self.reference:
            return f"into {self.domain} in the reference's style"
        return f"into {self.domain}, seed {self.seed}, {self.num} output{'s' if self.num > 1 else ''}"

    def tag(self, style: int) -> str:
        """Output ``style``'s part of a download name, as ``unpaired translate`` names its files."""
        if self.domain is None:
            return self.direction or "translated"
        return f"{self.domain}_ref" if self.reference else f"{self.domain}_seed{self.seed}_{style}"

    def caption(self, style: int) -> str:
        return f"Style {style}" if self.domain is not None and not self.reference else "Translation"


# ----------------------------------------------------------------------------- faces


class FaceCutter:
    """Face preparation for models trained on face crops: one ``FacePreparer`` per crop size,
    built on first use. Without the faces extra it is unavailable; the log says so once and
    ``missing`` says why."""

    def __init__(self):
        self._preparers: dict[int, FacePreparer] = {}
        self.missing: str | None = None

    def ready(self, size: int) -> bool:
        """Whether faces can be cut out at ``size`` (its preparer is built the first time)."""
        if self.missing is None and size not in self._preparers:
            try:
                self._preparers[size] = FacePreparer(size, "white")
            except UserError as exc:
                self.missing = str(exc)
                log.warning(f"{exc}; meanwhile, pictures for models trained on face crops are translated as they are")
        return size in self._preparers

    def cut(self, picture: Image.Image, size: int) -> FaceCrop:
        """The largest face as a ``FaceCrop``; 422 when there is none."""
        try:
            return self._preparers[size].largest(picture)
        except UserError as exc:
            raise Rejected(422, f"{exc}: this model translates portraits, upload a photo with a face") from None

    def close(self) -> None:
        for preparer in self._preparers.values():
            preparer.close()
        self._preparers.clear()


# ----------------------------------------------------------------------------- the shelf


@dataclass(frozen=True)
class Result:
    """What one request made: the picture the model was given (the face crop when faces were cut
    out), its translations, and their pictures as the page shows them (on white with faces)."""

    given: Image.Image
    translations: TranslationOutput
    images: list[Image.Image]


class ModelShelf:
    """The checkpoints on offer and the translators loaded from them on first use.

    At most ``capacity`` translators stay loaded (the least recently used is dropped first), and
    one translation runs at a time: a local page gains nothing from running models side by
    side on one device, and this bounds its memory. Face detection runs under the same lock
    (MediaPipe's graphs are not to be shared between threads).
    """

    def __init__(self, checkpoints: dict[str, Path], device: str = "auto", fit: str = "stretch",
                 capacity: int = 2):
        if not checkpoints:
            raise ValueError("a model shelf needs at least one checkpoint")
        self.checkpoints = dict(checkpoints)
        self.device, self.fit, self.capacity = device, fit, capacity
        self._loaded: OrderedDict[tuple[str, str | None], Translator] = OrderedDict()
        self._controls: dict[str, Controls] = {}
        self._faces = FaceCutter()
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.checkpoints)

    @property
    def loaded(self) -> list[tuple[str, str | None]]:
        """(model, direction or None) of the translators in memory, least recently used first."""
        return list(self._loaded)

    def _translator(self, name: str, direction: str | None = None) -> Translator:
        if name not in self.checkpoints:
            raise Rejected(404, f"no model named {name!r}; this server offers {', '.join(self.names)}")
        key = (name, direction)
        if key not in self._loaded:
            self._loaded[key] = load_translator(self.checkpoints[name], direction=direction, device=self.device)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]

    def controls(self, name: str) -> Controls:
        """The page's controls for a model, loading it the first time (so a broken checkpoint is
        reported when it is chosen). Known controls are answered without the lock, which a
        translation holds: a request parses its query and decodes while another is translated."""
        known = self._controls.get(name)  # entries are only ever added
        if known is not None:
            return known
        with self._lock:
            if name not in self._controls:
                translator = self._translator(name)
                controls = controls_of(name, translator, self._faces)
                if controls.directions:  # filed under the direction it runs, as requests name it
                    self._loaded[(name, translator.direction)] = self._loaded.pop((name, None))
                self._controls[name] = controls
            return self._controls[name]

    def translate(self, name: str, ask: Ask, picture: Image.Image, reference: Image.Image | None = None) -> Result:
        """Translate ``picture`` as ``ask`` (parsed against ``controls(name)``) says."""
        controls = self.controls(name)
        with self._lock:
            translator = self._translator(name, ask.direction)
            crop = self._faces.cut(picture, translator.img_size) if controls.faces else None
            given = crop.image if crop is not None else picture
            translations = translator([given], fit=self.fit, **ask.call(reference))
        images = translations.images
        if crop is not None and not ask.raw:
            images = [crop.on_white(image) for image in images]
        return Result(given, translations, images)

    def close(self) -> None:
        with self._lock:
            self._faces.close()
            self._loaded.clear()
