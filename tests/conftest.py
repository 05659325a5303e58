"""Shared test helpers: tiny two-domain datasets and reading a run's TensorBoard scalars."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unpaired.data.two_domain import demo_dataset_path

SRC = Path(__file__).resolve().parents[1] / "src"


def make_dataset(root: Path, n_train: int = 6, n_test: int = 3) -> Path:
    """A small real two-domain folder: the first images of each domain of the embedded demo set."""
    demo = demo_dataset_path()
    for domain, count in (("trainA", n_train), ("trainB", n_train), ("testA", n_test), ("testB", n_test)):
        (root / domain).mkdir(parents=True, exist_ok=True)
        for src in sorted((demo / domain).iterdir())[:count]:
            shutil.copy(src, root / domain / src.name)
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread: reductions run in a fixed order (the parity fixtures were made so),
    and nets this small run faster than with threads spin-waiting on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


# Small enough for a CPU iteration in well under a second.
TINY = ["--light", "--img-size", "32", "--ch", "4", "--n-res", "1", "--device", "cpu", "--num-workers", "0",
        "--deterministic", "--n-samples", "2"]


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m unpaired ARGS`` in a fresh process (used where a process must be killed)."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "unpaired", *args], capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"unpaired {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def spawn_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "unpaired", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_scalars(run: Path, tag: str) -> dict[int, float]:
    """step → value of one TensorBoard tag over all event files of a run; later files win."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[int, float] = {}
    for events in sorted((run / "logs").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values
