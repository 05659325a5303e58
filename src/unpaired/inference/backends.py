"""Where a translator's networks run: a torch device, or onnxruntime on an exported graph.

A backend maps a module's input batches (images, latent codes, domain indices) to its outputs,
as a tuple of float32 tensors on the CPU side of the caller's choosing, and can move to another
device (``to``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import UserError, import_optional
from ..runtime import resolve_device


def resolve_half(device: torch.device, half: bool | None) -> bool:
    """float16 weights by default on CUDA; refused on the CPU."""
    half = device.type == "cuda" if half is None else half
    if half and device.type != "cuda":
        raise UserError("half precision runs on CUDA only; use full precision on the CPU")
    return half


class TorchBackend:
    """A module on one torch device, in float32 or (CUDA only) float16 weights; index inputs stay integers.

    ``half`` None means float16 on CUDA and float32 elsewhere, chosen again on every ``to``.
    """

    def __init__(self, module: nn.Module, device: torch.device | str, half: bool | None = None):
        self.module = module
        self.requested_half = half
        self.to(device)

    @property
    def kind(self) -> str:
        return "torch"

    def to(self, device: torch.device | str) -> None:
        self.device = resolve_device(str(device))
        self.half = resolve_half(self.device, self.requested_half)
        self.dtype = torch.float16 if self.half else torch.float32
        self.module = self.module.to(device=self.device, dtype=self.dtype)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        moved = [t.to(self.device, self.dtype if t.is_floating_point() else t.dtype) for t in inputs]
        with torch.inference_mode():
            out = self.module(*moved)
        return tuple(t.float() for t in (out if isinstance(out, tuple) else (out,)))


def onnx_session(path: Path, device: torch.device) -> Any:
    """An onnxruntime session for ``path`` on ``device`` (CUDA when asked for and available)."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    ort = import_optional("onnxruntime", "onnx", "running an .onnx model")
    wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
    providers = [p for p in wanted if p in ort.get_available_providers()] + ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) share no base class
        raise UserError(f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]})") from None


def onnx_metadata(session: Any) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxBackend:
    """An exported graph on onnxruntime; a graph exported without --dynamic-batch runs one by one."""

    def __init__(self, path: Path, session: Any):
        self.path, self.session = path, session
        inputs = session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None

    @property
    def kind(self) -> str:
        return "onnxruntime"

    def to(self, device: torch.device | str) -> None:
        self.session = onnx_session(self.path, resolve_device(str(device)))

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = [np.ascontiguousarray(t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype))
                 for t in inputs]
        count = len(feeds[0])
        step = self.fixed_batch or count
        parts = [self.session.run(None, {name: feed[i:i + step] for name, feed in zip(self.input_names, feeds)})
                 for i in range(0, count, step)]
        return tuple(torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts))


Backend = TorchBackend | OnnxBackend
