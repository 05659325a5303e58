"""Translating with StarGAN v2: into a named domain, with a style from a latent code or a reference picture.

Inference runs the EMA networks, as the paper samples. Exported graphs: the latent-guided one
(the file asked for) takes ``image`` [B,3,S,S], ``z`` [B,latent_dim] and ``y`` [B] int64 domain
indices (mapping network + generator); the reference-guided one (``*_reference.onnx`` beside it)
takes ``image``, ``reference`` [B,3,S,S] and ``y`` (style encoder + generator). Both record the
domain names (index order), ``img_size`` and ``latent_dim`` in their metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import checkpoint as ckpt
from ...errors import UserError
from ...inference.backends import OnnxBackend, TorchBackend, onnx_metadata, onnx_session
from ...inference.onnx import DEFAULT_OPSET, Graph, export_graphs, random_images
from ...inference.pictures import Picture, prepare
from ...inference.translator import TranslationOutput, Translator
from ...runtime import resolve_device
from .fan import FAN, generate, load_fan
from .networks import EMA_NETS, EMA_SUFFIX, build_translation_nets
from .options import StarGANv2Arch

# How StarGAN v2 picks a style: the network that makes it, and what the exported graph calls its input.
STYLE_NETS = {"latent": "mapping_network", "reference": "style_encoder"}
GRAPH_INPUTS = {"latent": ("image", "z", "y"), "reference": ("image", "reference", "y")}


class TranslationNets(nn.Module):
    """Generator, mapping network and style encoder as one module, for inference.

    Its state_dict keys (``generator.*``, ...) are the EMA nets' stored ones minus the ``_ema``
    suffix, so a checkpoint loads into it with one rename (see ``ema_state``).
    """

    def __init__(self, arch: StarGANv2Arch):
        super().__init__()
        nets = build_translation_nets(arch)
        self.generator = nets["generator"]
        self.mapping_network = nets["mapping_network"]
        self.style_encoder = nets["style_encoder"]


def ema_state(states: ckpt.States) -> dict[str, torch.Tensor]:
    """A checkpoint's per-network states → the state_dict of ``TranslationNets`` (EMA copies: sampling uses them)."""
    return {f"{name}.{key}": tensor for name in EMA_NETS for key, tensor in states[name + EMA_SUFFIX].items()}


class GuidedTranslation(nn.Module):
    """(image x, style source, target domain index y) → image, for one ``guide``: "latent" (the
    mapping network turns a latent code z into the style) or "reference" (the style encoder reads
    it off a reference image as it would look in domain y).

    Plain tensors in and out, so the same module runs in PyTorch and is what ONNX export traces.
    """

    def __init__(self, nets: TranslationNets, guide: str, fan: FAN | None = None):
        super().__init__()
        self.nets, self.guide, self.fan = nets, guide, fan

    def forward(self, x: torch.Tensor, source: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        style = getattr(self.nets, STYLE_NETS[self.guide])(source, y)
        return generate(self.nets.generator, x, style, self.fan)


def reference_graph_path(path: Path | str) -> Path:
    """Where export writes the reference-guided graph beside the latent-guided one at ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_reference{path.suffix or '.onnx'}")


class StarGANv2Translator(Translator):
    """Translate pictures into one domain of a StarGAN v2 model (sizes and ``fit`` as every translator).

    ``translator(pictures, domain="dog", seed=7, num=3)`` makes ``num`` outputs per picture with
    styles from the mapping network: output k uses latent code k drawn from ``seed`` for every
    picture, so a seed names one set of styles and the same call gives the same pixels.
    ``translator(pictures, domain="dog", reference=picture)`` makes one output per picture in the
    style the style encoder reads off ``reference`` for that domain. Both return a
    ``TranslationOutput`` (per picture its outputs, ``style`` = k).
    """

    def __init__(self, backends: dict[str, TorchBackend | OnnxBackend], *, arch: StarGANv2Arch, source: Path):
        super().__init__(backends, model="stargan_v2", arch=arch, source=source)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.arch.domains

    def _describe(self) -> dict[str, Any]:
        return {"domains": list(self.domains), "guides": list(self.backends)}

    def domain_index(self, domain: str) -> int:
        """The label of a domain name (the sorted sub-folder names of the training data)."""
        if domain not in self.domains:
            raise UserError(f"unknown domain {domain!r}: this model translates into {', '.join(self.domains)}")
        return self.domains.index(domain)

    def latent_codes(self, seed: int, num: int) -> torch.Tensor:
        """``num`` latent codes z ~ N(0, I) [num, latent_dim], the same for the same seed everywhere."""
        return torch.randn(num, self.arch.latent_dim, generator=torch.Generator().manual_seed(seed))

    def _backend(self, guide: str):
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

    def __call__(self, pictures: Picture | Sequence[Picture], *, domain: str, seed: int | None = None,
                 num: int | None = None, reference: Picture | None = None, batch_size: int = 8,
                 fit: str = "stretch", keep_size: bool = False) -> TranslationOutput:
        return self._translate(pictures, self._forward(domain, seed, num, reference, fit), batch_size, fit,
                               keep_size)

    def _forward(self, domain: str, seed: int | None, num: int | None, reference: Picture | None,
                 fit: str) -> Callable[[torch.Tensor], list]:
        """The per-batch forward of one call: ``num`` latent-guided styles, or the reference's one."""
        label = self.domain_index(domain)
        if reference is not None:
            if seed is not None or num is not None:
                raise ValueError("seed and num are for latent-guided translation; a reference gives one style")
            x_ref = prepare(reference, self.img_size, fit, keep_size=False, transform=self.transform)[0]
            return lambda x: [(self.reference_tensor(x, x_ref.expand(len(x), -1, -1, -1), _labels(x, label)), None)]
        num = 1 if num is None else num
        if num < 1:
            raise ValueError(f"num must be at least 1, got {num}")
        codes = self.latent_codes(0 if seed is None else seed, num)
        return lambda x: [(self.latent_tensor(x, code.expand(len(x), -1), _labels(x, label)), None) for code in codes]

    def metadata(self, guide: str, companion: str) -> dict[str, str]:
        """What the exported graph of ``guide`` records: enough to run it, and the file of the other guide."""
        return ckpt.metadata(self.model, self.arch, guide=guide, companion=companion,
                             domains=json.dumps(list(self.domains)), img_size=self.img_size,
                             latent_dim=self.arch.latent_dim)

    def export(self, path: Path | str, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False
               ) -> dict[Path, dict[str, float]]:
        """Write the latent-guided graph at ``path`` and the reference-guided one beside it
        (``reference_graph_path``), both or neither, each checked on every domain."""
        if not all(isinstance(b, TorchBackend) for b in self.backends.values()):
            raise UserError(f"{self.source} is already an ONNX file: export from a run or .safetensors")
        if self.arch.w_hpf > 0:
            raise UserError("ONNX export of StarGAN v2 models trained with face masks (w_hpf > 0) is not supported: "
                            "the landmark network that makes the masks is not part of the graph")
        paths = {"latent": Path(path), "reference": reference_graph_path(path)}
        graphs = {}
        for guide, own in paths.items():
            module = self.backends[guide].module.to("cpu", torch.float32)
            companion = paths["reference" if guide == "latent" else "latent"].name
            graphs[own] = Graph(module, self._feed(guide, torch.tensor([0]), seed=0), ("translated",),
                                self.metadata(guide, companion), self._checks(guide, dynamic_batch))
        try:
            return export_graphs(graphs, opset, dynamic_batch)
        finally:
            for backend in self.backends.values():
                backend.to(backend.device)

    def _checks(self, guide: str, dynamic_batch: bool) -> list[dict[str, torch.Tensor]]:
        """Batches covering every domain: one batch of all of them (dynamic batch), else one batch per domain."""
        count = self.arch.num_domains
        labels = [torch.arange(count)] if dynamic_batch else [torch.tensor([d]) for d in range(count)]
        return [self._feed(guide, y, seed=1 + i) for i, y in enumerate(labels)]

    def _feed(self, guide: str, y: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        n, size = len(y), self.img_size
        style = (torch.randn(n, self.arch.latent_dim, generator=torch.Generator().manual_seed(seed))
                 if guide == "latent" else random_images(n, size, seed=seed + 1000))
        return dict(zip(GRAPH_INPUTS[guide], (random_images(n, size, seed=seed), style, y)))


def _labels(x: torch.Tensor, label: int) -> torch.Tensor:
    return torch.full((len(x),), label, dtype=torch.long)


def arch_from_meta(values: dict[str, Any]) -> StarGANv2Arch:
    """The architecture a weights file or graph records (JSON turns the domain tuple into a list)."""
    known = {name: values[name] for name in StarGANv2Arch.__dataclass_fields__ if name in values}
    arch = StarGANv2Arch(**{**known, "domains": tuple(known.get("domains", ()))})
    arch.check()
    if not arch.domains:
        raise UserError("the recorded StarGAN v2 architecture names no domains")
    return arch


def open_translator(arch: StarGANv2Arch, read, source: Path, *, device: str = "auto", half: bool | None = None,
                    img_size: int | None = None, fan_weights: Path | str | None = None) -> StarGANv2Translator:
    """The EMA generator, mapping network and style encoder (what the paper samples with) of a model.

    A model trained with face masks (``w_hpf > 0``) needs the FAN (``fan_weights``, the official
    wing.ckpt) to make them at inference too.
    """
    if img_size is not None and img_size != arch.img_size:
        raise UserError(f"{source} holds a StarGAN v2 model, which runs only at its training size "
                        f"{arch.img_size} (asked for {img_size})")
    names = [name + EMA_SUFFIX for name in EMA_NETS]
    states = read(names)
    missing = [name for name in names if name not in states]
    if missing:
        raise UserError(f"{source} has no {', '.join(missing)} network (a StarGAN v2 checkpoint holds the EMA nets)")
    with torch.device("meta"):
        nets = TranslationNets(arch)
    nets = ckpt.load_strict(nets, ema_state(states), source, "the EMA networks", assign=True).eval().float()
    fan = None
    if arch.w_hpf > 0:
        if fan_weights is None:
            raise UserError(f"{source} was trained with face masks (w_hpf {arch.w_hpf:g}): pass --fan-weights "
                            f"wing.ckpt (the official FAN) to make them")
        fan = load_fan(fan_weights)
    dev = resolve_device(device)
    backends = {guide: TorchBackend(GuidedTranslation(nets, guide, fan).eval(), dev, half) for guide in STYLE_NETS}
    return StarGANv2Translator(backends, arch=arch, source=source)


def open_onnx_translator(path: Path, meta: dict[str, str], *, device: str = "auto",
                         img_size: int | None = None) -> StarGANv2Translator:
    """The exported graph given and, when it is beside it, the graph of the other guide."""
    arch = arch_from_meta(ckpt.read_arch(meta, path))
    if img_size is not None and img_size != arch.img_size:
        raise UserError(f"{path} was exported for {arch.img_size}-px input; re-export it for {img_size}")
    dev = resolve_device(device)
    backends = {meta.get("guide", "latent"): OnnxBackend(path, onnx_session(path, dev))}
    companion = path.parent / meta.get("companion", "")
    if meta.get("companion") and companion.is_file():
        session = onnx_session(companion, dev)
        backends[onnx_metadata(session).get("guide", "reference")] = OnnxBackend(companion, session)
    return StarGANv2Translator(backends, arch=arch, source=path)
