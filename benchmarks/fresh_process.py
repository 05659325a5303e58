"""What the memory benchmarks share: one configuration per fresh process, its peak memory, GPU sizes.

A benchmark script calls ``run(script, config, limit_gib)`` in the parent; the child (the same
script run with ``--child JSON``) measures and prints one JSON row (``child_main``). The parent
polls the child's resident set and stops it past ``limit_gib``, so that a configuration too
big for a shared machine ends as a row ("stopped: over N GiB") instead of swapping or waking
the kernel's OOM killer on the neighbours.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

GIB = 2**30
GPU_GIB = (8, 11, 12, 16, 24, 32, 40, 48, 80)  # common card sizes
CUDA_OVERHEAD_GIB = 0.6  # CUDA context and cuDNN workspace, outside max_memory_allocated
FRAGMENTATION = 1.15  # the caching allocator reserves more than it hands out


def rss_gib(field: str = "VmRSS", pid: int | str = "self") -> float:
    """``field`` of /proc/PID/status (VmRSS now, VmHWM the peak) in GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / GIB
    return float("nan")


def peak_gib(device) -> float:
    """This process's peak so far: allocated CUDA memory on a GPU, the resident set on the CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    return rss_gib("VmHWM")


def run(script: str, config: dict, limit_gib: float) -> dict:
    """``script --child CONFIG`` in a fresh process: its row, or why there is none."""
    child = subprocess.Popen([sys.executable, script, "--child", json.dumps(config)], stdout=subprocess.PIPE,
                             text=True)
    highest = 0.0
    while child.poll() is None:
        try:
            highest = max(highest, rss_gib("VmRSS", child.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        if highest > limit_gib:
            child.kill()
            child.wait()
            return {**config, "status": f"stopped: over {limit_gib:g} GiB", "peak_gib": highest}
        time.sleep(0.2)
    out = child.stdout.read()
    if child.wait() != 0:
        return {**config, "status": f"failed (exit {child.returncode})", "peak_gib": highest}
    return json.loads(out.strip().splitlines()[-1])


def child_main(measure: Callable[[dict], dict], config: str) -> None:
    print(json.dumps({**measure(json.loads(config)), "status": "ok"}))


def fits(row: dict) -> str:
    """The smallest common GPU size a row's peak should fit in.

    From a CPU row, ``(peak − baseline) × FRAGMENTATION + CUDA_OVERHEAD_GIB``, where baseline is
    the resident set of Python and torch before the networks existed (a GPU does not hold it);
    an estimate in fp32 until the row is measured on a GPU.
    """
    if row.get("status") != "ok":
        return "?"
    need = (row["peak_gib"] - row["baseline_gib"]) * FRAGMENTATION + CUDA_OVERHEAD_GIB
    return next((f"{gib} GB" for gib in GPU_GIB if need <= gib), f"> {GPU_GIB[-1]} GB")
