"""Inference throughput of the U-GAT-IT generator: images/s per runtime, variant and batch size.

Runtimes: PyTorch eager float32 (the baseline, what ``Translator`` runs on the CPU), PyTorch's
best mode (channels_last, plus bfloat16 autocast where the CPU has native bf16 and it is faster,
float16 weights on CUDA, optionally ``torch.compile``) and onnxruntime on the CPU (the exported
graph, dynamic batch). Weights are random: speed does not depend on them.

    python benchmarks/translate_throughput.py                      # 256 px, ch 64: the paper's nets
    python benchmarks/translate_throughput.py --img-size 128 --ch 32 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unpaired.inference.backends import TorchBackend
from unpaired.models.ugatit.networks import build_generator
from unpaired.models.ugatit.options import UGATITArch
from unpaired.runtime import resolve_device
from unpaired.models.ugatit.translate import ImageAndHeatmap, TwoDomainTranslator

Run = Callable[[torch.Tensor], object]


def images_per_second(run: Run, x: torch.Tensor, seconds: float, warmup: float,
                      sync: Callable[[], None]) -> float:
    """Images per second over at least 3 calls filling ``seconds``, after ``warmup`` seconds of calls.

    The first calls on a CPU pick oneDNN kernels and can be 30x slower than later ones.
    """
    rates = []
    for budget in (warmup, seconds):
        sync()
        iters, start = 0, time.perf_counter()
        while iters < 3 or time.perf_counter() - start < budget:
            run(x)
            iters += 1
        sync()
        rates.append(iters * x.shape[0] / (time.perf_counter() - start))
    return rates[-1]


def torch_runner(module: torch.nn.Module, channels_last: bool, autocast_dtype: torch.dtype | None,
                 device: torch.device) -> Run:
    def run(x: torch.Tensor) -> object:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with torch.inference_mode(), amp:
            return module(x)
    return run


def bf16_is_fast() -> bool:
    """bfloat16 only pays on CPUs with native support (AVX-512 BF16, AMX); elsewhere it is emulated."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def best_torch(module: torch.nn.Module, x: torch.Tensor, device: torch.device, compile_: bool,
               measure: Callable[[Run, torch.Tensor], float]) -> tuple[str, float]:
    """The fastest tuned PyTorch mode for this device, with its label.

    A mode that fails is left out: the full generator flattens its features with ``.view``,
    which refuses channels_last tensors.
    """
    if device.type == "cuda":
        module, x = module.half(), x.half()
        candidates = {"fp16": (False, None), "channels_last+fp16": (True, None)}
    else:
        candidates = {"fp32": (False, None), "channels_last": (True, None)}
        if bf16_is_fast():
            candidates |= {"bf16": (False, torch.bfloat16), "channels_last+bf16": (True, torch.bfloat16)}
    results = {}
    for label, (channels_last, dtype) in candidates.items():
        net = module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        net = torch.compile(net) if compile_ else net
        try:
            run = torch_runner(net, channels_last, dtype, device)
            results[label + ("+compile" if compile_ else "")] = measure(run, x)
        except RuntimeError as exc:
            print(f"  ({label} skipped: {str(exc).splitlines()[0][:90]})")
    return max(results.items(), key=lambda item: item[1])


def onnx_runner(arch: UGATITArch, module: ImageAndHeatmap, folder: Path, threads: int) -> Run:
    import onnxruntime as ort

    path = folder / f"{'light' if arch.light else 'full'}.onnx"
    translator = TwoDomainTranslator(TorchBackend(module, "cpu", half=False), model="ugatit", arch=arch,
                                     direction="A2B", source=Path("random weights"))
    translator.export(path, dynamic_batch=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x.numpy()})


def hardware(device: torch.device) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(ImportError):
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    return info


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--ch", type=int, default=64)
    parser.add_argument("--n-res", type=int, default=4)
    parser.add_argument("--variants", nargs="+", choices=("light", "full"), default=["light", "full"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each measurement")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the best mode")
    parser.add_argument("--no-onnx", action="store_true", help="skip onnxruntime")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def measure(run: Run, x: torch.Tensor) -> float:
        return images_per_second(run, x, args.seconds, args.warmup, sync)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            arch = UGATITArch(light=variant == "light", img_size=args.img_size, ch=args.ch, n_res=args.n_res)
            torch.manual_seed(0)
            module = ImageAndHeatmap(build_generator(arch)).eval()
            onnx = None if args.no_onnx else onnx_runner(arch, module, Path(tmp), torch.get_num_threads())
            for batch in args.batch_sizes:
                x = torch.rand(batch, 3, args.img_size, args.img_size) * 2 - 1
                eager = measure(torch_runner(module.to(device), False, None, device), x.to(device))
                # A copy, so tuning memory format and dtype leaves the eager baseline as it was.
                tuned = copy.deepcopy(module).to(device)
                mode, best = best_torch(tuned, x.to(device), device, args.compile, measure)
                row = {"variant": variant, "batch": batch, "eager_fp32": eager, "best_mode": mode, "best": best}
                if onnx is not None:
                    row["onnxruntime_cpu"] = measure(onnx, x)
                rows.append(row)
                print_row(row)
    result = {"hardware": hardware(device), "img_size": args.img_size, "ch": args.ch, "n_res": args.n_res,
              "unit": "images/s", "results": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def print_row(row: dict[str, object]) -> None:
    base = row["eager_fp32"]
    cells = [f"{row['variant']:>5} b{row['batch']:<2}", f"eager fp32 {base:8.2f}",
             f"best {row['best']:8.2f} (x{row['best'] / base:.2f}, {row['best_mode']})"]
    if "onnxruntime_cpu" in row:
        cells.append(f"onnxruntime {row['onnxruntime_cpu']:8.2f} (x{row['onnxruntime_cpu'] / base:.2f})")
    print(" | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
