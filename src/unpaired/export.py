"""Export a generator to ONNX, checked by onnxruntime against PyTorch before the file appears.

The graph maps ``image`` [B,3,S,S] in [-1,1] to ``translated`` [B,3,S,S] and ``heatmap``
[B,1,S/4,S/4]; the batch size is 1 unless exported with ``dynamic_batch``. The model, its
architecture, direction and ``img_size`` are stored as ONNX ``metadata_props``, which is what
lets ``Translator.from_checkpoint("model.onnx")`` run it.

It uses PyTorch's TorchScript-based exporter (``dynamo=False``): for this network (reflection
pads, instance norm, global pooling, ``torch.var``) it is the robust path and needs no extra
packages.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError, import_optional
from .files import atomic_path
from .translate import LoadedGenerator

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


def _sample(loaded: LoadedGenerator, batch: int) -> torch.Tensor:
    size, channels = loaded.img_size, loaded.arch.img_ch
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _trace(loaded: LoadedGenerator, path: Path, opset: int, dynamic_batch: bool) -> None:
    axes = {name: {0: "batch"} for name in (INPUT, *OUTPUTS)} if dynamic_batch else None
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and its constant-folding remarks are not actionable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(loaded.module, (_sample(loaded, 1),), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT], output_names=list(OUTPUTS), dynamic_axes=axes)


def _add_metadata(onnx: Any, path: Path, metadata: dict[str, str]) -> None:
    model = onnx.load(str(path))
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _compare(ort: Any, path: Path, loaded: LoadedGenerator, batch: int) -> ExportCheck:
    x = _sample(loaded, batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image, heatmap = session.run(list(OUTPUTS), {INPUT: x.numpy()})
    with torch.inference_mode():
        ref_image, ref_heatmap = (t.numpy() for t in loaded.module(x))
    scale = max(1.0, float(np.abs(ref_heatmap).max()))
    return ExportCheck(float(np.abs(image - ref_image).max()), float(np.abs(heatmap - ref_heatmap).max()) / scale)


def export_onnx(loaded: LoadedGenerator, path: Path | str, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False) -> ExportCheck:
    """Write ``loaded`` as an ONNX file at ``path`` if onnxruntime reproduces PyTorch within 1e-4.

    The file is written atomically: a failed export or check leaves no file (and an existing
    file at ``path`` untouched).
    """
    onnx = import_optional("onnx", "onnx", "ONNX export")
    ort = import_optional("onnxruntime", "onnx", "checking the ONNX export")
    with atomic_path(Path(path)) as tmp:
        try:
            _trace(loaded, tmp, opset, dynamic_batch)
        except Exception as exc:  # the exporter raises many types for unsupported ops or opsets
            raise UserError(f"ONNX export failed at opset {opset}: {str(exc).splitlines()[0]}") from None
        _add_metadata(onnx, tmp, loaded.metadata())
        check = _compare(ort, tmp, loaded, batch=2 if dynamic_batch else 1)
        if not check.worst <= TOLERANCE:
            raise UserError(f"onnxruntime differs from PyTorch by {check.worst:.2e} (> {TOLERANCE:g}); "
                            f"no file written (try another --opset)")
    return check
