"""ONNX export: trace graphs, record their metadata, and write them only if onnxruntime agrees.

A family's translator describes what to export as ``Graph``s (the module, example inputs by
name, output names, the metadata that lets ``load_translator("model.onnx")`` run it, and the
batches onnxruntime must reproduce PyTorch on); ``export_graphs`` writes all of them or none.
The batch size is 1 unless exported with ``dynamic_batch``.

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

from .. import guard
from ..checkpoint import FORMAT
from ..errors import UserError, import_optional, os_error_behind
from ..files import atomic_path

DEFAULT_OPSET = 17
TOLERANCE = 1e-4
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


def random_images(batch: int, size: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
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


def _exported(onnx: Any, path: Path) -> bool:
    """Whether ``path`` is a graph ``unpaired export`` wrote (its metadata names our format)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises its own DecodeError, or OSError, for what is no graph
        return False
    return any(entry.key == "format" and entry.value == FORMAT for entry in model.metadata_props)


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
        if os_error_behind(exc) is not None:
            raise  # the machine's fault (a full disk), reported as such by atomic_path
        raise UserError(f"ONNX export failed at opset {opset}: {str(exc).splitlines()[0]}") from None
    _add_metadata(onnx, tmp, graph.metadata)
    diffs = _compare(ort, tmp, graph)
    worst = max(diffs.values())
    if not worst <= TOLERANCE:
        raise UserError(f"onnxruntime differs from PyTorch by {worst:.2e} (> {TOLERANCE:g}); "
                        f"no file written (try another --opset)")
    return diffs


def export_graphs(graphs: dict[Path, Graph], source: Path, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False
                  ) -> dict[Path, dict[str, float]]:
    """Write every graph or none: all are checked before any file is renamed into place (and a failure
    leaves existing files untouched). Returns, per file, the largest difference of each output.

    No graph may replace ``source`` (the model's file) or any file but a graph exported before.
    """
    onnx = import_optional("onnx", "onnx", "ONNX export")
    ort = import_optional("onnxruntime", "onnx", "checking the ONNX export")
    guard.check([source], files=list(graphs), ours=lambda path: _exported(onnx, path))
    with contextlib.ExitStack() as stack:
        temporaries = {path: stack.enter_context(atomic_path(path)) for path in graphs}
        return {path: _write(onnx, ort, graph, temporaries[path], opset, dynamic_batch)
                for path, graph in graphs.items()}
