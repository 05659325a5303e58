"""``Translator``: run a trained generator on pictures, the API behind translate, test, export and serve.

A translator holds one generator (one direction) loaded from any of the files a user has: a
run folder (its newest complete checkpoint), a checkpoint folder, one of our
``weights.safetensors`` files, an official U-GAT-IT ``.pt`` file, or an ``.onnx`` file written
by ``unpaired export`` (that one runs on onnxruntime).

StarGAN v2 models translate into any of their domains, with a style drawn from a latent code or
read off a reference picture, so they have their own ``StarGANv2Translator`` (same files, same
sizes and fits, EMA networks); ``Translator`` refuses them with a pointer to it.

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
from collections.abc import Callable, Collection, Sequence
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
from .models.stargan_v2 import (
    EMA_NETS,
    EMA_SUFFIX,
    STYLE_NETS,
    GuidedTranslation,
    StarGANv2Arch,
    TranslationNets,
    ema_state,
    load_fan,
)
from .models.ugatit import build_generator
from .runtime import resolve_device
from .viz import colorize_heatmap, overlay_heatmap, to_uint8_image

DIRECTIONS = {"A2B": "genA2B", "B2A": "genB2A"}
FITS = ("stretch", "pad")
Picture = Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ModelKind:
    """How to rebuild one model family's generator from the metadata its weights carry.

    ``multidomain`` families (StarGAN v2) translate into a named domain with a style, through
    ``StarGANv2Translator``; the others have one generator per direction (``Translator``).
    """

    arch: Callable[[dict[str, str]], Any]
    generator: Callable[[Any], nn.Module]
    multidomain: bool = False


def stargan_v2_arch(meta: dict[str, str]) -> StarGANv2Arch:
    return StarGANv2Arch.from_dict(json.loads(meta["arch"]))


# One entry per model family that translate can run; the key is the weights' "model" metadata.
MODELS: dict[str, ModelKind] = {
    "ugatit": ModelKind(ckpt.ugatit_arch, build_generator),
    "photo2cartoon": ModelKind(ckpt.ugatit_arch, build_photo2cartoon_generator),
    "stargan_v2": ModelKind(stargan_v2_arch, TranslationNets, multidomain=True),
}
GUIDES = tuple(STYLE_NETS)  # the two ways StarGAN v2 picks a style


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


@dataclass(frozen=True)
class LoadedStarGANv2:
    """The EMA networks of a StarGAN v2 checkpoint (CPU, float32, eval mode) as its two translation modules.

    ``latent`` maps (image, z, y) and ``reference`` (image, reference image, y) to an image; they
    share one set of networks.
    """

    latent: GuidedTranslation
    reference: GuidedTranslation
    arch: StarGANv2Arch
    source: Path
    model: str = "stargan_v2"

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    def metadata(self, guide: str, companion: str) -> dict[str, str]:
        """What the exported graph of ``guide`` records: enough to run it, and the file of the other guide."""
        return {"format": ckpt.FORMAT, "model": self.model, "arch": json.dumps(self.arch.to_dict()),
                "guide": guide, "companion": companion, "domains": json.dumps(list(self.arch.domains)),
                "img_size": str(self.img_size), "latent_dim": str(self.arch.latent_dim)}


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


def _checkpoint_file(path: Path | str) -> Path:
    """The file a --checkpoint names: itself, or a folder's newest weights file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    return _weights_file(path) if path.is_dir() else path


def checkpoint_model(path: Path | str) -> str | None:
    """The model family recorded in a run folder, checkpoint folder or our .safetensors; None for
    other files (official .pt files are two-domain; .onnx files say so when opened)."""
    file = _checkpoint_file(path)
    if file.suffix != ".safetensors":
        return None
    return ckpt.load_weights(file, nets=())[1].get("model")


def _check_family(model: str, arch: Any, source: Path, multidomain: bool) -> None:
    """Refuse a checkpoint that the other translator runs, saying which one and how."""
    if MODELS[model].multidomain == multidomain:
        return
    if MODELS[model].multidomain:
        raise UserError(f"{source} holds a StarGAN v2 model: choose a target domain with --target-domain "
                        f"(one of {', '.join(arch.domains)}; Python: StarGANv2Translator)")
    raise UserError(f"{source} holds a {model} model, not StarGAN v2: --target-domain, --reference, --seed and "
                    f"--num are for StarGAN v2 models (translate this one with --direction A2B|B2A)")


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


def _read_ours(file: Path, nets: Collection[str], multidomain: bool
               ) -> tuple[str, Any, dict[str, dict[str, torch.Tensor]]]:
    """Model, architecture and the states of ``nets`` from one of our weights files."""
    states, meta = ckpt.load_weights(file, nets=nets)
    model = meta.get("model", "?")
    if model not in MODELS:
        raise UserError(f"{file} holds a {model!r} model; translate knows {', '.join(MODELS)}")
    arch = MODELS[model].arch(meta)
    _check_family(model, arch, file, multidomain)
    missing = [net for net in nets if net not in states]
    if missing:
        raise UserError(f"{file} has no {', '.join(missing)} network (it holds {meta.get('nets', 'none')})")
    return model, arch, states


def _build_loaded(model: str, arch: Any, state: dict[str, torch.Tensor], source: Path, what: str) -> nn.Module:
    """``model``'s inference network holding ``state``, float32, eval mode.

    It is built on the meta device and takes the checkpoint's tensors as they are, so a full
    256-px U-GAT-IT generator (a 268M-parameter MLP) is not randomly initialised first.
    """
    with torch.device("meta"):
        network = MODELS[model].generator(arch)
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise UserError(f"{source}: {what} does not fit its recorded architecture "
                        f"({str(exc).splitlines()[0]})") from None
    return network.eval().float()


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
    """Read the ``direction`` generator from a run folder, checkpoint folder, .safetensors or official .pt."""
    net = _generator_name(direction)
    path = _checkpoint_file(path)
    if path.suffix == ".safetensors":
        model, arch, states = _read_ours(path, [net], multidomain=False)
        arch, state = _with_img_size(arch, img_size, path), states[net]
    elif path.suffix in (".pt", ".pth"):
        model, arch, state = _read_official(path, net, img_size)
    else:
        raise UserError(f"{path} is not a checkpoint: expected a run folder, a .safetensors weights file, "
                        f"an official U-GAT-IT .pt or an exported .onnx")
    module = ImageAndHeatmap(_build_loaded(model, arch, state, path, net))
    return LoadedGenerator(module, model, arch, direction, path)


def _same_size(arch: StarGANv2Arch, img_size: int | None, source: Path) -> None:
    if img_size is not None and img_size != arch.img_size:
        raise UserError(f"{source} holds a StarGAN v2 model, which runs only at its training size "
                        f"{arch.img_size} (asked for {img_size})")


def load_stargan_v2(path: Path | str, img_size: int | None = None,
                    fan_weights: Path | str | None = None) -> LoadedStarGANv2:
    """Read the EMA generator, mapping network and style encoder (what the paper samples with)
    from a StarGAN v2 run folder, checkpoint folder or .safetensors.

    A model trained with face masks (``w_hpf > 0``) needs the FAN (``fan_weights``, the official
    wing.ckpt) to make them at inference too.
    """
    path = _checkpoint_file(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path} is not a StarGAN v2 checkpoint: expected a run folder, a .safetensors "
                        f"weights file or an exported .onnx")
    names = [name + EMA_SUFFIX for name in EMA_NETS]
    model, arch, states = _read_ours(path, names, multidomain=True)
    _same_size(arch, img_size, path)
    nets = _build_loaded(model, arch, ema_state(states), path, "the EMA networks")
    fan = None
    if arch.w_hpf > 0:
        if fan_weights is None:
            raise UserError(f"{path} was trained with face masks (w_hpf {arch.w_hpf:g}): pass --fan-weights "
                            f"wing.ckpt (the official FAN) to make them")
        fan = load_fan(fan_weights)
    return LoadedStarGANv2(GuidedTranslation(nets, "latent", fan).eval(),
                           GuidedTranslation(nets, "reference", fan).eval(), arch, path)


# ----------------------------------------------------------------------------- backends


# A backend maps a module's input batches (images, latent codes, domain indices) to its
# outputs as a tuple of float32 tensors.
Backend = Callable[..., tuple[torch.Tensor, ...]]


class _TorchBackend:
    """A module on one torch device, in float32 or (CUDA only) float16 weights; index inputs stay integers."""

    def __init__(self, module: nn.Module, device: torch.device, half: bool):
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.module = module.to(device=device, dtype=self.dtype)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        moved = [t.to(self.device, self.dtype if t.is_floating_point() else t.dtype) for t in inputs]
        with torch.inference_mode():
            out = self.module(*moved)
        return tuple(t.float() for t in (out if isinstance(out, tuple) else (out,)))


class _OnnxBackend:
    """An exported graph on onnxruntime; a graph exported without --dynamic-batch runs one by one."""

    def __init__(self, session: Any):
        self.session = session
        inputs = session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = [np.ascontiguousarray(t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype))
                 for t in inputs]
        count = len(feeds[0])
        step = self.fixed_batch or count
        parts = [self.session.run(None, {name: feed[i:i + step] for name, feed in zip(self.input_names, feeds)})
                 for i in range(0, count, step)]
        return tuple(torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts))


def _onnx_session(path: Path, device: torch.device) -> Any:
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
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


def _onnx_metadata(session: Any, path: Path, multidomain: bool) -> tuple[str, Any, dict[str, str]]:
    """Model, architecture and metadata of a graph written by ``unpaired export``."""
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != ckpt.FORMAT or meta.get("model") not in MODELS:
        raise UserError(f"{path} was not exported by 'unpaired export' (no {ckpt.FORMAT} metadata)")
    arch = MODELS[meta["model"]].arch(meta)
    _check_family(meta["model"], arch, path, multidomain)
    return meta["model"], arch, meta


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


def _prepare(item: Picture, size: int, fit: str, keep_size: bool) -> tuple[torch.Tensor, Placement]:
    """A picture as the model's [3,S,S] input in [-1, 1], and how to put the result back."""
    square, placement = place(_as_picture(item), size, fit, keep_size)
    if isinstance(square, Image.Image):
        square = TestTransform(size)(square)
    return square, placement


def _as_list(pictures: Picture | Sequence[Picture]) -> tuple[list[Picture], bool]:
    """(the pictures as a list, whether one picture was given rather than a list or [B,3,H,W] batch)."""
    single = not isinstance(pictures, (list, tuple)) and not (isinstance(pictures, torch.Tensor) and pictures.ndim == 4)
    return ([pictures] if single else list(pictures)), single


def _picture(image: torch.Tensor, placement: Placement) -> Image.Image:
    """A model-square result [3,S,S] as the RGB picture the user asked for."""
    return Image.fromarray(to_uint8_image(placement.restore(image)))


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
        half = _resolve_half(dev, half)
        if path.suffix == ".onnx":
            return cls._from_onnx(path, direction, dev, img_size, half)
        loaded = load_generator(path, direction or "A2B", img_size)
        return cls(_TorchBackend(loaded.module, dev, half), model=loaded.model, arch=loaded.arch,
                   direction=loaded.direction, device=dev)

    @classmethod
    def _from_onnx(cls, path: Path, direction: str | None, device: torch.device, img_size: int | None,
                   half: bool) -> Translator:
        _refuse_half_onnx(half)
        session = _onnx_session(path, device)
        model, arch, meta = _onnx_metadata(session, path, multidomain=False)
        stored = meta["direction"]
        if direction is not None and _generator_name(direction) != _generator_name(stored):
            raise UserError(f"{path} holds the {stored} generator, not {direction}")
        _exported_size(arch, img_size, path)
        return cls(_OnnxBackend(session), model=model, arch=arch, direction=stored, device=device)

    def translate_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space batch in, model-space batch out: x [B,C,S,S] in [-1,1] → (images [B,C,S,S]
        in [-1,1], heatmaps [B,1,S/4,S/4]), float32, for evaluation code that does its own I/O."""
        size = self.img_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.arch.img_ch, size, size):
            raise ValueError(f"expected a [B,{self.arch.img_ch},{size},{size}] batch, got {tuple(x.shape)}")
        return self.backend(x)

    def __call__(self, pictures: Picture | Sequence[Picture], *, batch_size: int = 8, fit: str = "stretch",
                 keep_size: bool = False) -> Translation | list[Translation]:
        _check_batch_size(batch_size)
        items, single = _as_list(pictures)
        results: list[Translation] = []
        for start in range(0, len(items), batch_size):
            results += self._translate_batch(items[start:start + batch_size], fit, keep_size)
        return results[0] if single else results

    def _translate_batch(self, items: list[Picture], fit: str, keep_size: bool) -> list[Translation]:
        prepared = [_prepare(item, self.img_size, fit, keep_size) for item in items]
        inputs = torch.stack([square for square, _ in prepared])
        images, heatmaps = (t.cpu() for t in self.translate_tensor(inputs))
        return [Translation(image=_picture(image, placement), heatmap=heatmap[0].numpy(), model_input=square,
                            placement=placement)
                for (square, placement), image, heatmap in zip(prepared, images, heatmaps)]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _refuse_half_onnx(half: bool) -> None:
    if half:
        raise UserError("an exported .onnx model runs in the precision it was exported in (float32)")


def _exported_size(arch: Any, img_size: int | None, path: Path) -> None:
    if img_size is not None and img_size != arch.img_size:
        raise UserError(f"{path} was exported for {arch.img_size}-px input; re-export it for {img_size}")


def _resolve_half(device: torch.device, half: bool | None) -> bool:
    """float16 by default on CUDA; refused on the CPU."""
    half = device.type == "cuda" if half is None else half
    if half and device.type != "cuda":
        raise UserError("half precision runs on CUDA only; use full precision on the CPU")
    return half


def reference_graph_path(path: Path | str) -> Path:
    """Where export writes the reference-guided graph beside the latent-guided one at ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_reference{path.suffix or '.onnx'}")


# ----------------------------------------------------------------------------- StarGAN v2


class StarGANv2Translator:
    """Translate pictures into one domain of a StarGAN v2 model (sizes and ``fit`` as ``Translator``).

    * ``latent(pictures, domain, seed=S, num=N)``: N outputs per picture, styles from the mapping
      network. Output k uses latent code k drawn from ``seed`` for every picture, so a seed names
      one set of N styles and the same call gives the same pixels.
    * ``reference(pictures, reference, domain)``: one output per picture in the style the style
      encoder reads off ``reference`` for that domain.

    Both run the EMA networks, as the paper samples. Loads from a run folder, checkpoint folder,
    our .safetensors or the .onnx graphs ``unpaired export`` writes (the latent-guided file and
    the ``*_reference.onnx`` beside it).
    """

    def __init__(self, backends: dict[str, Backend], *, arch: StarGANv2Arch, device: torch.device, source: Path):
        self.backends, self.arch, self.device, self.source = backends, arch, device, source
        self.model = "stargan_v2"

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    @property
    def domains(self) -> tuple[str, ...]:
        return self.arch.domains

    @classmethod
    def from_checkpoint(cls, path: Path | str, device: str = "auto", img_size: int | None = None,
                        half: bool | None = None, fan_weights: Path | str | None = None) -> StarGANv2Translator:
        """Load for ``device`` ("auto": CUDA when available); ``half`` as ``Translator.from_checkpoint``;
        ``fan_weights`` for a model trained with face masks."""
        path, dev = Path(path), resolve_device(device)
        half = _resolve_half(dev, half)
        if path.suffix == ".onnx":
            _refuse_half_onnx(half)
            return cls._from_onnx(path, dev, img_size)
        loaded = load_stargan_v2(path, img_size, fan_weights)
        backends = {"latent": _TorchBackend(loaded.latent, dev, half),
                    "reference": _TorchBackend(loaded.reference, dev, half)}
        return cls(backends, arch=loaded.arch, device=dev, source=loaded.source)

    @classmethod
    def _from_onnx(cls, path: Path, device: torch.device, img_size: int | None) -> StarGANv2Translator:
        """The graph given and, when it is beside it, the graph of the other guide."""
        session = _onnx_session(path, device)
        _, arch, meta = _onnx_metadata(session, path, multidomain=True)
        _exported_size(arch, img_size, path)
        backends = {meta["guide"]: _OnnxBackend(session)}
        companion = path.parent / meta["companion"]
        if companion.is_file():
            other = _onnx_session(companion, device)
            backends[_onnx_metadata(other, companion, multidomain=True)[2]["guide"]] = _OnnxBackend(other)
        return cls(backends, arch=arch, device=device, source=path)

    def domain_index(self, domain: str) -> int:
        """The label of a domain name (the sorted sub-folder names of the training data)."""
        if domain not in self.domains:
            raise UserError(f"unknown domain {domain!r}: this model translates into {', '.join(self.domains)}")
        return self.domains.index(domain)

    def latent_codes(self, seed: int, num: int) -> torch.Tensor:
        """``num`` latent codes z ~ N(0, I) [num, latent_dim], the same for the same seed everywhere."""
        return torch.randn(num, self.arch.latent_dim, generator=torch.Generator().manual_seed(seed))

    def _backend(self, guide: str) -> Backend:
        if guide not in self.backends:
            raise UserError(f"{self.source} has no {guide}-guided graph: export writes it beside the other "
                            f"(keep both .onnx files in one folder)")
        return self.backends[guide]

    def latent_tensor(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Model-space batches in and out: x [B,3,S,S] in [-1,1], z [B,latent_dim], y [B] domain indices."""
        return self._backend("latent")(x, z, y)[0]

    def reference_tensor(self, x: torch.Tensor, x_ref: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Model-space batches in and out: x and x_ref [B,3,S,S] in [-1,1], y [B] domain indices."""
        return self._backend("reference")(x, x_ref, y)[0]

    def latent(self, pictures: Picture | Sequence[Picture], domain: str, *, seed: int = 0, num: int = 1,
               batch_size: int = 8, fit: str = "stretch", keep_size: bool = False
               ) -> list[Image.Image] | list[list[Image.Image]]:
        """``num`` translations of each picture into ``domain`` (a list per picture; one list for one picture)."""
        if num < 1:
            raise ValueError(f"num must be at least 1, got {num}")
        label, codes = self.domain_index(domain), self.latent_codes(seed, num)

        def translate(x: torch.Tensor) -> list[torch.Tensor]:
            y = torch.full((len(x),), label, dtype=torch.long)
            return [self.latent_tensor(x, code.expand(len(x), -1), y) for code in codes]

        items, single = _as_list(pictures)
        results = self._run(items, translate, batch_size, fit, keep_size)
        return results[0] if single else results

    def reference(self, pictures: Picture | Sequence[Picture], reference: Picture, domain: str, *,
                  batch_size: int = 8, fit: str = "stretch", keep_size: bool = False
                  ) -> Image.Image | list[Image.Image]:
        """Each picture translated into ``domain`` with the style of ``reference`` (fitted like the pictures)."""
        label = self.domain_index(domain)
        x_ref = _prepare(reference, self.img_size, fit, keep_size=False)[0]

        def translate(x: torch.Tensor) -> list[torch.Tensor]:
            y = torch.full((len(x),), label, dtype=torch.long)
            return [self.reference_tensor(x, x_ref.expand(len(x), -1, -1, -1), y)]

        items, single = _as_list(pictures)
        results = [outs[0] for outs in self._run(items, translate, batch_size, fit, keep_size)]
        return results[0] if single else results

    def _run(self, items: list[Picture], translate: Callable[[torch.Tensor], list[torch.Tensor]],
             batch_size: int, fit: str, keep_size: bool) -> list[list[Image.Image]]:
        """Fit the pictures, ``translate`` them a batch at a time, put each output back in its picture's
        frame: per picture, one image per tensor ``translate`` returns."""
        _check_batch_size(batch_size)
        results: list[list[Image.Image]] = []
        for start in range(0, len(items), batch_size):
            prepared = [_prepare(item, self.img_size, fit, keep_size) for item in items[start:start + batch_size]]
            outputs = [out.cpu() for out in translate(torch.stack([square for square, _ in prepared]))]
            results += [[_picture(out[i], placement) for out in outputs] for i, (_, placement) in enumerate(prepared)]
        return results
