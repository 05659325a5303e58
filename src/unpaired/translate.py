"""``Translator``: run a trained generator on pictures, the API behind translate, test, export and serve.

A translator holds one generator (one direction) loaded from any of the files a user has: a
run folder (its newest complete checkpoint), a checkpoint folder, one of our
``weights.safetensors`` files, an official U-GAT-IT ``.pt`` file, or an ``.onnx`` file written
by ``unpaired export`` (that one runs on onnxruntime).

Sizes. The generator works on S×S squares (S = ``img_size``). Pictures of another shape are
fitted into the square in one of two ways (``fit``):

* ``"stretch"`` (default, what the official test phase does): resize the whole picture to S×S,
  squashing a non-square one;
* ``"pad"``: scale the longer side to S and extend the shorter one to S by repeating the edge
  pixels, so faces keep their proportions; the padding is cropped off the result.

The result is S×S (stretch) or the picture's own aspect at S on its longer side (pad); with
``keep_size=True`` it is resized back to the input's exact width and height.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from . import checkpoint as ckpt
from .data import TestTransform, to_rgb
from .errors import UserError, import_optional
from .models.photo2cartoon import build_generator as build_photo2cartoon_generator
from .models.photo2cartoon import infer_photo2cartoon_arch, load_official_photo2cartoon
from .models.ugatit import build_generator
from .runtime import resolve_device
from .viz import colorize_heatmap, overlay_heatmap, to_uint8_image

DIRECTIONS = {"A2B": "genA2B", "B2A": "genB2A"}
FITS = ("stretch", "pad")
Picture = Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ModelKind:
    """How to rebuild one model family's generator from the metadata its weights carry."""

    arch: Callable[[dict[str, str]], Any]
    generator: Callable[[Any], nn.Module]


# One entry per model family that translate can run; the key is the weights' "model" metadata.
MODELS: dict[str, ModelKind] = {
    "ugatit": ModelKind(ckpt.ugatit_arch, build_generator),
    "photo2cartoon": ModelKind(ckpt.ugatit_arch, build_photo2cartoon_generator),
}


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


@dataclass(frozen=True)
class LoadedGenerator:
    """One generator read from a checkpoint (CPU, float32, eval mode) and what it is."""

    module: ImageAndHeatmap
    model: str
    arch: Any
    direction: str
    source: Path

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    def metadata(self) -> dict[str, str]:
        """What an exported file must record to be loaded back (ONNX ``metadata_props``)."""
        return {"format": ckpt.FORMAT, "model": self.model, "arch": json.dumps(asdict(self.arch)),
                "direction": self.direction, "img_size": str(self.img_size)}


# ----------------------------------------------------------------------------- loading


def _generator_name(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction {direction!r}: use {' or '.join(DIRECTIONS)}")
    return DIRECTIONS[direction]


def _weights_file(path: Path) -> Path:
    """The weights file behind a run folder or a checkpoint folder."""
    if (path / ckpt.WEIGHTS).is_file():
        return path / ckpt.WEIGHTS
    newest = ckpt.latest_checkpoint(path)
    if newest is None:
        raise UserError(f"{path} is neither a run folder with a complete checkpoint "
                        f"(checkpoints/<step>/{ckpt.WEIGHTS}) nor a checkpoint folder")
    return newest / ckpt.WEIGHTS


def _with_img_size(arch: Any, img_size: int | None, source: Path) -> Any:
    """Run a light model at another size; full models are tied to their training size."""
    if img_size is None or img_size == arch.img_size:
        return arch
    if img_size < 4 or img_size % 4:
        raise UserError(f"image size must be a positive multiple of 4, got {img_size}")
    if not getattr(arch, "light", False):
        raise UserError(f"{source} holds a full model, which only runs at its training size "
                        f"{arch.img_size} (asked for {img_size}); light models run at any size")
    return replace(arch, img_size=img_size)


def _read_ours(file: Path, net: str, img_size: int | None) -> tuple[str, Any, dict[str, torch.Tensor]]:
    states, meta = ckpt.load_weights(file, nets=[net])
    model = meta.get("model", "?")
    if model not in MODELS:
        raise UserError(f"{file} holds a {model!r} model; translate knows {', '.join(MODELS)}")
    if net not in states:
        raise UserError(f"{file} has no {net} network (it holds {meta.get('nets', 'none')})")
    arch = _with_img_size(MODELS[model].arch(meta), img_size, file)
    return model, arch, states[net]


def _read_official(file: Path, net: str, img_size: int | None) -> tuple[str, Any, dict[str, torch.Tensor]]:
    """An official U-GAT-IT checkpoint, or else the photo2cartoon authors' ``photo2cartoon_weights.pt``."""
    try:
        states = ckpt.read_official(file)
        return "ugatit", ckpt.infer_official_arch(states, img_size), states[net]
    except UserError as not_ugatit:
        try:
            states = load_official_photo2cartoon(file)
        except UserError:
            raise not_ugatit from None
    if net not in states:
        raise UserError(f"{file} has no {net} network (it holds {', '.join(states)})")
    return "photo2cartoon", infer_photo2cartoon_arch(states, img_size), states[net]


def load_generator(path: Path | str, direction: str = "A2B", img_size: int | None = None) -> LoadedGenerator:
    """Read the ``direction`` generator from a run folder, checkpoint folder, .safetensors or official .pt.

    The network is built on the meta device and takes the checkpoint's tensors as they are,
    so a full 256-px generator (a 268M-parameter MLP) is not randomly initialised first.
    """
    path = Path(path)
    net = _generator_name(direction)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        path = _weights_file(path)
    if path.suffix == ".safetensors":
        model, arch, state = _read_ours(path, net, img_size)
    elif path.suffix in (".pt", ".pth"):
        model, arch, state = _read_official(path, net, img_size)
    else:
        raise UserError(f"{path} is not a checkpoint: expected a run folder, a .safetensors weights file, "
                        f"an official U-GAT-IT .pt or an exported .onnx")
    with torch.device("meta"):
        generator = MODELS[model].generator(arch)
    try:
        generator.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise UserError(f"{path}: {net} does not fit its recorded architecture "
                        f"({str(exc).splitlines()[0]})") from None
    module = ImageAndHeatmap(generator).eval().float()
    return LoadedGenerator(module, model, arch, direction, path)


# ----------------------------------------------------------------------------- backends


class _TorchBackend:
    """The generator on one torch device, in float32 or (CUDA only) float16 weights."""

    def __init__(self, module: nn.Module, device: torch.device, half: bool):
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.module = module.to(device=device, dtype=self.dtype)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            image, heatmap = self.module(x.to(self.device, self.dtype))
        return image.float(), heatmap.float()


class _OnnxBackend:
    """An exported generator on onnxruntime; a model exported without --dynamic-batch runs one by one."""

    def __init__(self, session: Any):
        self.session = session
        first = session.get_inputs()[0]
        self.input_name = first.name
        self.fixed_batch = first.shape[0] if isinstance(first.shape[0], int) else None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = x.detach().to("cpu", torch.float32).numpy()
        step = self.fixed_batch or len(feed)
        parts = [self.session.run(None, {self.input_name: feed[i:i + step]}) for i in range(0, len(feed), step)]
        return tuple(torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts))


def _onnx_session(path: Path, device: torch.device) -> Any:
    ort = import_optional("onnxruntime", "onnx", "running an .onnx model")
    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) share no base class
        raise UserError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None


# ----------------------------------------------------------------------------- geometry


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


def _as_picture(item: Picture) -> Image.Image | torch.Tensor:
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


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Translation:
    """One translated picture, with the generator's attention map and where it came from.

    ``heatmap`` is the raw CAM map (float32, S/4 × S/4, in model-square coordinates);
    ``heatmap_image`` and ``overlay`` render it aligned with ``image``.
    """

    image: Image.Image
    heatmap: np.ndarray
    model_input: torch.Tensor
    placement: Placement

    def heatmap_image(self) -> Image.Image:
        """The attention map in JET colours, the same size as ``image``."""
        square = colorize_heatmap(self.heatmap, tuple(self.model_input.shape[-2:]))
        return self.placement.restore(Image.fromarray(square))

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The attention map blended over the input as the model saw it, the same size as ``image``."""
        square = overlay_heatmap(to_uint8_image(self.model_input), self.heatmap, alpha)
        return self.placement.restore(Image.fromarray(square))


class Translator:
    """Translate pictures with one generator; see the module docstring for sizes and ``fit``.

    ``translator(picture)`` returns a ``Translation``; ``translator([pictures])`` a list of them.
    Pictures are PIL images, uint8 arrays (HxW, HxWx3, HxWx4) or float [3,H,W] tensors in [-1, 1].
    """

    def __init__(self, backend: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], *,
                 model: str, arch: Any, direction: str, device: torch.device):
        self.backend = backend
        self.model, self.arch, self.direction, self.device = model, arch, direction, device

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    @classmethod
    def from_checkpoint(cls, path: Path | str, direction: str | None = None, device: str = "auto",
                        img_size: int | None = None, half: bool | None = None) -> Translator:
        """Load the generator for ``direction`` ("A2B" or "B2A"; default A2B, or an .onnx file's own).

        ``device`` "auto" picks CUDA when available. ``half`` runs float16 weights; it defaults
        to on for CUDA and cannot be used on the CPU. ``img_size`` runs a light model at another
        size (an official light .pt does not record its size: default 256).
        """
        path, dev = Path(path), resolve_device(device)
        half = dev.type == "cuda" if half is None else half
        if half and dev.type != "cuda":
            raise UserError("half precision runs on CUDA only; use full precision on the CPU")
        if path.suffix == ".onnx":
            return cls._from_onnx(path, direction, dev, img_size, half)
        loaded = load_generator(path, direction or "A2B", img_size)
        return cls(_TorchBackend(loaded.module, dev, half), model=loaded.model, arch=loaded.arch,
                   direction=loaded.direction, device=dev)

    @classmethod
    def _from_onnx(cls, path: Path, direction: str | None, device: torch.device, img_size: int | None,
                   half: bool) -> Translator:
        if not path.is_file():
            raise UserError(f"checkpoint not found: {path}")
        if half:
            raise UserError("an exported .onnx model runs in the precision it was exported in (float32)")
        session = _onnx_session(path, device)
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("format") != ckpt.FORMAT or meta.get("model") not in MODELS:
            raise UserError(f"{path} was not exported by 'unpaired export' (no {ckpt.FORMAT} metadata)")
        stored = meta["direction"]
        if direction is not None and _generator_name(direction) != _generator_name(stored):
            raise UserError(f"{path} holds the {stored} generator, not {direction}")
        arch = MODELS[meta["model"]].arch(meta)
        if img_size is not None and img_size != arch.img_size:
            raise UserError(f"{path} was exported for {arch.img_size}-px input; re-export it for {img_size}")
        return cls(_OnnxBackend(session), model=meta["model"], arch=arch, direction=stored, device=device)

    def translate_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space batch in, model-space batch out: x [B,C,S,S] in [-1,1] → (images [B,C,S,S]
        in [-1,1], heatmaps [B,1,S/4,S/4]), float32, for evaluation code that does its own I/O."""
        size = self.img_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.arch.img_ch, size, size):
            raise ValueError(f"expected a [B,{self.arch.img_ch},{size},{size}] batch, got {tuple(x.shape)}")
        return self.backend(x)

    def __call__(self, pictures: Picture | Sequence[Picture], *, batch_size: int = 8, fit: str = "stretch",
                 keep_size: bool = False) -> Translation | list[Translation]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        single = not isinstance(pictures, (list, tuple)) and not (
            isinstance(pictures, torch.Tensor) and pictures.ndim == 4)
        items = [pictures] if single else list(pictures)
        results: list[Translation] = []
        for start in range(0, len(items), batch_size):
            results += self._translate_batch(items[start:start + batch_size], fit, keep_size)
        return results[0] if single else results

    def _prepare(self, item: Picture, fit: str, keep_size: bool) -> tuple[torch.Tensor, Placement]:
        square, placement = place(_as_picture(item), self.img_size, fit, keep_size)
        if isinstance(square, Image.Image):
            square = TestTransform(self.img_size)(square)
        return square, placement

    def _translate_batch(self, items: list[Picture], fit: str, keep_size: bool) -> list[Translation]:
        prepared = [self._prepare(item, fit, keep_size) for item in items]
        inputs = torch.stack([square for square, _ in prepared])
        images, heatmaps = (t.cpu() for t in self.translate_tensor(inputs))
        return [Translation(image=Image.fromarray(to_uint8_image(placement.restore(image))),
                            heatmap=heatmap[0].numpy(), model_input=square, placement=placement)
                for (square, placement), image, heatmap in zip(prepared, images, heatmaps)]
