"""The one result type every translator returns, and what every translator shares.

``translator(pictures, ...)`` always returns a ``TranslationOutput``: a sequence of
``Translation`` records (one per output picture, in input order; a model that makes several
styles of each picture gives several records per input), with ``.images`` for the pictures
alone. Models with an attention map (U-GAT-IT and its variants) fill in ``heatmap``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..viz import colorize_heatmap, overlay_heatmap, to_uint8_image
from ..data.images import ResizeTransform
from .backends import Backend
from .pictures import Picture, Placement, as_list, prepare, restore_picture


@dataclass(frozen=True)
class Translation:
    """One translated picture, where it came from, and (where the model has one) its attention map.

    ``source`` is the index of the input picture it translates, ``style`` which of that picture's
    outputs it is (0 unless the model makes several). ``heatmap`` is the raw CAM map (float32,
    S/4 × S/4, in model-square coordinates); ``heatmap_image`` and ``overlay`` render it aligned
    with ``image``.
    """

    image: Image.Image
    model_input: torch.Tensor
    placement: Placement
    heatmap: np.ndarray | None = None
    source: int = 0
    style: int = 0

    def _map(self) -> np.ndarray:
        if self.heatmap is None:
            raise ValueError("this model has no attention map")
        return self.heatmap

    def heatmap_image(self) -> Image.Image:
        """The attention map in JET colours, the same size as ``image``."""
        square = colorize_heatmap(self._map(), tuple(self.model_input.shape[-2:]))
        return self.placement.restore(Image.fromarray(square))

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The attention map blended over the input as the model saw it, the same size as ``image``."""
        square = overlay_heatmap(to_uint8_image(self.model_input), self._map(), alpha)
        return self.placement.restore(Image.fromarray(square))


@dataclass(frozen=True)
class TranslationOutput(Sequence[Translation]):
    """Every output of one call, in input order (a model's several styles of a picture side by side)."""

    translations: tuple[Translation, ...]

    @property
    def images(self) -> list[Image.Image]:
        return [t.image for t in self.translations]

    @property
    def heatmaps(self) -> list[np.ndarray] | None:
        """The raw attention maps, or None for models without one."""
        if not self.translations or self.translations[0].heatmap is None:
            return None
        return [t.heatmap for t in self.translations]

    def __len__(self) -> int:
        return len(self.translations)

    def __getitem__(self, index):  # type: ignore[override]
        return self.translations[index]

    def __iter__(self) -> Iterator[Translation]:
        return iter(self.translations)


# What a model makes of a batch of model-square inputs [B,3,S,S]: per style, the output images
# [B,3,S,S] and (None for models without attention) the heatmaps [B,1,h,w].
Forward = Callable[[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor | None]]]

# Model-square pixels one forward pass may take (batch × S²). A generator's activations grow with
# them: a light U-GAT-IT peaks near 1.3 GiB for one 1024-px input on the CPU, so the default batch
# of 8 would need ~11 GiB there. 2**20 px keeps a pass near one 1024-px input (4 at 512 px, 16 at
# 256 px: the default batch is not cut below 512 px); benchmarks/translate_memory.py measures it.
MAX_BATCH_PIXELS = 2**20


def capped_batch(batch_size: int, img_size: int, max_pixels: int | None = MAX_BATCH_PIXELS) -> int:
    """Pictures per forward pass for a requested ``batch_size`` of ``img_size``-px inputs: fewer
    where they would exceed ``max_pixels`` (None: no cap), never fewer than one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_pixels is None:
        return batch_size
    return max(1, min(batch_size, max_pixels // img_size**2))


class Translator:
    """What every family's translator shares: its backends, architecture, device, batching and fitting.

    Subclasses define ``__call__`` with their own options and build a ``Forward`` for ``_translate``.
    ``has_attention`` says whether its translations carry heatmaps; ``face_crops`` whether the
    model was trained on aligned face crops (``unpaired translate`` then cuts faces out first).
    """

    has_attention = False
    face_crops = False
    max_batch_pixels: int | None = MAX_BATCH_PIXELS  # per forward pass (see capped_batch); None: no cap

    def __init__(self, backends: dict[str, Backend], *, model: str, arch: Any, source: Path,
                 transform: type = ResizeTransform):
        self.backends, self.model, self.arch, self.source = backends, model, arch, Path(source)
        self.transform = transform  # how a PIL picture becomes the model's input (see pictures.prepare)

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    @property
    def device(self) -> torch.device:
        backend = next(iter(self.backends.values()))
        return getattr(backend, "device", torch.device("cpu"))

    @property
    def backend_kind(self) -> str:
        return next(iter(self.backends.values())).kind

    def to(self, device: torch.device | str) -> Translator:
        """Run on ``device`` from now on (CUDA when asked for as "cuda" or "cuda:N"); returns self."""
        for backend in self.backends.values():
            backend.to(device)
        return self

    def _describe(self) -> dict[str, Any]:
        """What ``repr`` shows beyond model, size, device and backend (subclasses add theirs)."""
        return {}

    def __repr__(self) -> str:
        fields = {"model": self.model, "img_size": self.img_size, **self._describe(),
                  "device": str(self.device), "backend": self.backend_kind, "source": str(self.source)}
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    def batch_for(self, batch_size: int) -> int:
        """The pictures per forward pass a call asking for ``batch_size`` runs (``capped_batch``)."""
        return capped_batch(batch_size, self.img_size, self.max_batch_pixels)

    def _translate(self, pictures: Picture | Sequence[Picture], forward: Forward, batch_size: int, fit: str,
                   keep_size: bool) -> TranslationOutput:
        """Fit the pictures, run ``forward`` a batch at a time, put every output back in its picture's frame.

        Batches hold at most ``max_batch_pixels`` model-square pixels, whatever ``batch_size`` asks."""
        batch_size = self.batch_for(batch_size)
        items = as_list(pictures)
        results: list[Translation] = []
        for start in range(0, len(items), batch_size):
            prepared = [prepare(item, self.img_size, fit, keep_size, self.transform)
                        for item in items[start:start + batch_size]]
            outputs = forward(torch.stack([square for square, _ in prepared]))
            for i, (square, placement) in enumerate(prepared):
                for style, (images, heatmaps) in enumerate(outputs):
                    heatmap = None if heatmaps is None else heatmaps[i, 0].cpu().numpy()
                    results.append(Translation(restore_picture(images[i].cpu(), placement), square, placement,
                                               heatmap, source=start + i, style=style))
        return TranslationOutput(tuple(results))
