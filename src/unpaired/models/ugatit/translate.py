"""Translating with one U-GAT-IT-style generator (one direction, with its attention heatmap).

photo2cartoon and the TF-exact U-GAT-IT have generators of the same contract, picture in,
``(image, cam_logit, heatmap)`` out, so they use this translator too, each with its own
builder and architecture class.

Exported graphs map ``image`` [B,3,S,S] in [-1,1] to ``translated`` [B,3,S,S] and ``heatmap``
[B,1,S/4,S/4], and record model, architecture, direction and img_size in their metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import checkpoint as ckpt
from ...data.images import ResizeTransform
from ...errors import UserError
from ...inference.backends import OnnxBackend, TorchBackend, onnx_session
from ...inference.onnx import DEFAULT_OPSET, Graph, export_graphs, random_images
from ...inference.pictures import Picture
from ...inference.translator import TranslationOutput, Translator
from ...runtime import resolve_device

DIRECTIONS = {"A2B": "genA2B", "B2A": "genB2A"}
OUTPUTS = ("translated", "heatmap")

StatesReader = Callable[[Collection[str]], ckpt.States]  # reads the state_dicts of the named networks


class ImageAndHeatmap(nn.Module):
    """A generator as inference sees it: picture in, (translated picture, attention heatmap) out.

    The CAM logits only feed a training loss, so they are dropped here and from ONNX exports.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, _cam_logit, heatmap = self.generator(x)
        return image, heatmap


def generator_name(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}: use {' or '.join(DIRECTIONS)}")
    return DIRECTIONS[direction]


def with_img_size(arch: Any, img_size: int | None, source: Path) -> Any:
    """Run a light model at another size; full models are tied to their training size."""
    if img_size is None or img_size == arch.img_size:
        return arch
    if img_size < 4 or img_size % 4:
        raise UserError(f"image size must be a positive multiple of 4, got {img_size}")
    if not arch.light:
        raise UserError(f"{source} holds a full model, which only runs at its training size "
                        f"{arch.img_size} (asked for {img_size}); light models run at any size")
    return replace(arch, img_size=img_size)


def build_loaded(build: Callable[[Any], nn.Module], arch: Any, state: dict[str, torch.Tensor], source: Path,
                 what: str) -> nn.Module:
    """``build(arch)`` holding ``state``, float32, eval mode.

    It is built on the meta device and takes the checkpoint's tensors as they are, so a full
    256-px U-GAT-IT generator (a 268M-parameter MLP) is not randomly initialised first.
    """
    with torch.device("meta"):
        network = build(arch)
    return ckpt.load_strict(network, state, source, what, assign=True).eval().float()


class TwoDomainTranslator(Translator):
    """Translate pictures with one generator (``direction`` A2B or B2A), with its attention heatmaps.

    ``translator(pictures)`` returns a ``TranslationOutput``, one ``Translation`` per picture
    (see ``inference.pictures`` for ``fit`` and ``keep_size``). ``face_crops`` says the model was
    trained on aligned face crops (photo2cartoon): ``unpaired translate`` cuts faces out first.
    """

    has_attention = True

    def __init__(self, backend: TorchBackend | OnnxBackend, *, model: str, arch: Any, direction: str,
                 source: Path, face_crops: bool = False, transform: type = ResizeTransform):
        super().__init__({"generator": backend}, model=model, arch=arch, source=source, transform=transform)
        self.direction, self.face_crops = direction, face_crops

    def _describe(self) -> dict[str, Any]:
        return {"direction": self.direction, "light": self.arch.light}

    def translate_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space batch in, model-space batch out: x [B,C,S,S] in [-1,1] → (images [B,C,S,S]
        in [-1,1], heatmaps [B,1,S/4,S/4]), float32, for evaluation code that does its own I/O."""
        size, channels = self.img_size, self.arch.img_ch
        if x.ndim != 4 or tuple(x.shape[1:]) != (channels, size, size):
            raise ValueError(f"expected a [B,{channels},{size},{size}] batch, got {tuple(x.shape)}")
        images, heatmaps = self.backends["generator"](x)
        return images, heatmaps

    def __call__(self, pictures: Picture | Sequence[Picture], *, batch_size: int = 8, fit: str = "stretch",
                 keep_size: bool = False) -> TranslationOutput:
        return self._translate(pictures, lambda x: [self.translate_tensor(x)], batch_size, fit, keep_size)

    def metadata(self) -> dict[str, str]:
        return ckpt.metadata(self.model, self.arch, direction=self.direction, img_size=self.img_size)

    def export(self, path: Path | str, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False
               ) -> dict[Path, dict[str, float]]:
        """Write the generator as ONNX at ``path`` if onnxruntime reproduces PyTorch within 1e-4.

        The heatmap is a sum over hundreds of channels, so its difference is taken relative to its
        largest magnitude. Returns {path: {output: largest difference}}.
        """
        backend = self.backends["generator"]
        if not isinstance(backend, TorchBackend):
            raise UserError(f"{self.source} is already an ONNX file: export from a run, .safetensors or official file")
        module = backend.module.to("cpu", torch.float32)
        size, channels = self.img_size, self.arch.img_ch
        graph = Graph(module, {"image": random_images(1, size, channels=channels)}, OUTPUTS, self.metadata(),
                      checks=[{"image": random_images(2 if dynamic_batch else 1, size, channels=channels)}],
                      relative=frozenset({"heatmap"}))
        try:
            return export_graphs({Path(path): graph}, opset, dynamic_batch)
        finally:
            backend.to(backend.device)


def open_translator(model: str, build: Callable[[Any], nn.Module], arch: Any, read: StatesReader, source: Path, *,
                    device: str = "auto", half: bool | None = None, img_size: int | None = None,
                    direction: str | None = None, face_crops: bool = False,
                    transform: type = ResizeTransform) -> TwoDomainTranslator:
    """The ``direction`` generator (default A2B) of a model whose networks ``read`` returns."""
    direction = direction or "A2B"
    net = generator_name(direction)
    states = read([net])
    if net not in states:
        raise UserError(f"{source} has no {net} network (it holds {', '.join(states) or 'none'})")
    arch = with_img_size(arch, img_size, source)
    module = ImageAndHeatmap(build_loaded(build, arch, states[net], source, net))
    return TwoDomainTranslator(TorchBackend(module, resolve_device(device), half), model=model, arch=arch,
                               direction=direction, source=source, face_crops=face_crops, transform=transform)


def open_onnx_translator(model: str, arch: Any, path: Path, meta: dict[str, str], *, device: str = "auto",
                         img_size: int | None = None, direction: str | None = None,
                         face_crops: bool = False, transform: type = ResizeTransform) -> TwoDomainTranslator:
    """An exported generator on onnxruntime; it holds one direction, the one its metadata names."""
    stored = meta.get("direction", "A2B")
    if direction is not None and generator_name(direction) != generator_name(stored):
        raise UserError(f"{path} holds the {stored} generator, not {direction}")
    if img_size is not None and img_size != arch.img_size:
        raise UserError(f"{path} was exported for {arch.img_size}-px input; re-export it for {img_size}")
    session = onnx_session(path, resolve_device(device))
    return TwoDomainTranslator(OnnxBackend(path, session), model=model, arch=arch, direction=stored, source=path,
                               face_crops=face_crops, transform=transform)
