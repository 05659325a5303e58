"""Export a generator to ONNX, checked by onnxruntime against PyTorch before the file appears.

U-GAT-IT / photo2cartoon: the graph maps ``image`` [B,3,S,S] in [-1,1] to ``translated``
[B,3,S,S] and ``heatmap`` [B,1,S/4,S/4]. StarGAN v2: two graphs, both → ``translated``; the
latent-guided one (the file asked for) takes ``image``, ``z`` [B,latent_dim] and ``y`` [B] int64
domain indices (mapping network + generator), the reference-guided one (``*_reference.onnx``
beside it) takes ``image``, ``reference`` [B,3,S,S] and ``y`` (style encoder + generator). The
batch size is 1 unless exported with ``dynamic_batch``. The model, its architecture (StarGAN v2:
domain names, latent size), direction or guide and ``img_size`` are stored as ONNX
``metadata_props``, which is what lets ``Translator.from_checkpoint("model.onnx")`` (and
``StarGANv2Translator``) run it.

It uses PyTorch's TorchScript-based exporter (``dynamo=False``): for these networks (reflection
pads, instance norm, global pooling, ``torch.var``, per-domain heads picked by index) it is the
robust path and needs no extra packages.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import UserError, import_optional
from .files import atomic_path
from .translate import LoadedGenerator, LoadedStarGANv2, reference_graph_path

DEFAULT_OPSET = 17
TOLERANCE = 1e-4
INPUT, OUTPUTS = "image", ("translated", "heatmap")


@dataclass(frozen=True)
class ExportCheck:
    """Largest onnxruntime-vs-PyTorch differences on a random batch.

    The heatmap is a sum over hundreds of channels, so its float32 rounding grows with its
    magnitude; its difference is taken relative to its largest absolute value (when above 1).
    """

    image_diff: float
    heatmap_diff: float

    @property
    def worst(self) -> float:
        return max(self.image_diff, self.heatmap_diff)


@dataclass(frozen=True)
class Graph:
    """One module to export: the batch-1 inputs it is traced with (by input name, in order), its
    output names, its metadata, and the input batches onnxruntime must reproduce PyTorch on."""

    module: nn.Module
    example: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    metadata: dict[str, str]
    checks: list[dict[str, torch.Tensor]]
    relative: frozenset[str] = frozenset()  # outputs compared relative to their largest magnitude (when > 1)


def _images(batch: int, size: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _trace(graph: Graph, path: Path, opset: int, dynamic_batch: bool) -> None:
    names = [*graph.example, *graph.outputs]
    axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and its constant-folding remarks are not actionable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.module, tuple(graph.example.values()), str(path), dynamo=False, opset_version=opset,
                          input_names=list(graph.example), output_names=list(graph.outputs), dynamic_axes=axes)


def _add_metadata(onnx: Any, path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _compare(ort: Any, path: Path, graph: Graph) -> dict[str, float]:
    """Per output, the largest difference over every check batch."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(graph.outputs, 0.0)
    for feed in graph.checks:
        got = session.run(list(graph.outputs), {name: t.numpy() for name, t in feed.items()})
        with torch.inference_mode():
            ref = graph.module(*feed.values())
        for name, value, expected in zip(graph.outputs, got, ref if isinstance(ref, tuple) else (ref,)):
            expected = expected.numpy()
            scale = max(1.0, float(np.abs(expected).max())) if name in graph.relative else 1.0
            worst[name] = max(worst[name], float(np.abs(value - expected).max()) / scale)
    return worst


def _write(onnx: Any, ort: Any, graph: Graph, tmp: Path, opset: int, dynamic_batch: bool) -> dict[str, float]:
    """Trace ``graph`` into ``tmp``, add its metadata, and refuse it unless onnxruntime agrees with PyTorch."""
    try:
        _trace(graph, tmp, opset, dynamic_batch)
    except Exception as exc:  # the exporter raises many types for unsupported ops or opsets
        raise UserError(f"ONNX export failed at opset {opset}: {str(exc).splitlines()[0]}") from None
    _add_metadata(onnx, tmp, graph.metadata)
    diffs = _compare(ort, tmp, graph)
    worst = max(diffs.values())
    if not worst <= TOLERANCE:
        raise UserError(f"onnxruntime differs from PyTorch by {worst:.2e} (> {TOLERANCE:g}); "
                        f"no file written (try another --opset)")
    return diffs


def _export(graphs: dict[Path, Graph], opset: int, dynamic_batch: bool) -> dict[Path, dict[str, float]]:
    """Write every graph or none: all are checked before any file is renamed into place (and a failure
    leaves existing files untouched)."""
    onnx = import_optional("onnx", "onnx", "ONNX export")
    ort = import_optional("onnxruntime", "onnx", "checking the ONNX export")
    with contextlib.ExitStack() as stack:
        temporaries = {path: stack.enter_context(atomic_path(path)) for path in graphs}
        return {path: _write(onnx, ort, graph, temporaries[path], opset, dynamic_batch)
                for path, graph in graphs.items()}


def _generator_graph(loaded: LoadedGenerator, dynamic_batch: bool) -> Graph:
    size, channels = loaded.img_size, loaded.arch.img_ch
    return Graph(loaded.module, {INPUT: _images(1, size, channels=channels)}, OUTPUTS, loaded.metadata(),
                 checks=[{INPUT: _images(2 if dynamic_batch else 1, size, channels=channels)}],
                 relative=frozenset({"heatmap"}))


def export_onnx(loaded: LoadedGenerator, path: Path | str, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False) -> ExportCheck:
    """Write ``loaded`` as an ONNX file at ``path`` if onnxruntime reproduces PyTorch within 1e-4.

    The file is written atomically: a failed export or check leaves no file (and an existing
    file at ``path`` untouched).
    """
    path = Path(path)
    diffs = _export({path: _generator_graph(loaded, dynamic_batch)}, opset, dynamic_batch)[path]
    return ExportCheck(diffs["translated"], diffs["heatmap"])


# ----------------------------------------------------------------------------- StarGAN v2

STARGAN_INPUTS = {"latent": ("image", "z", "y"), "reference": ("image", "reference", "y")}


def _stargan_checks(loaded: LoadedStarGANv2, guide: str, dynamic_batch: bool) -> list[dict[str, torch.Tensor]]:
    """Batches covering every domain: one batch of all of them (dynamic batch), else one batch per domain."""
    count = loaded.arch.num_domains
    labels = [torch.arange(count)] if dynamic_batch else [torch.tensor([d]) for d in range(count)]
    return [_stargan_feed(loaded, guide, y, seed=1 + i) for i, y in enumerate(labels)]


def _stargan_feed(loaded: LoadedStarGANv2, guide: str, y: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    n, size = len(y), loaded.img_size
    style = (torch.randn(n, loaded.arch.latent_dim, generator=torch.Generator().manual_seed(seed))
             if guide == "latent" else _images(n, size, seed=seed + 1000))
    return dict(zip(STARGAN_INPUTS[guide], (_images(n, size, seed=seed), style, y)))


def export_stargan_v2(loaded: LoadedStarGANv2, path: Path | str, *, opset: int = DEFAULT_OPSET,
                      dynamic_batch: bool = False) -> dict[Path, float]:
    """Write the latent-guided graph at ``path`` and the reference-guided one beside it
    (``reference_graph_path``), both or neither, each checked on every domain.

    Returns the largest onnxruntime-vs-PyTorch difference of each file.
    """
    if loaded.arch.w_hpf > 0:
        raise UserError("ONNX export of StarGAN v2 models trained with face masks (w_hpf > 0) is not supported: "
                        "the landmark network that makes the masks is not part of the graph")
    paths = {"latent": Path(path), "reference": reference_graph_path(path)}
    modules = {"latent": loaded.latent, "reference": loaded.reference}
    graphs = {}
    for guide, own in paths.items():
        companion = paths["reference" if guide == "latent" else "latent"].name
        graphs[own] = Graph(modules[guide], _stargan_feed(loaded, guide, torch.tensor([0]), seed=0), ("translated",),
                            loaded.metadata(guide, companion), _stargan_checks(loaded, guide, dynamic_batch))
    diffs = _export(graphs, opset, dynamic_batch)
    return {file: found["translated"] for file, found in diffs.items()}
