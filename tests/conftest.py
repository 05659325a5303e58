"""Shared test helpers: tiny two-domain datasets, reading a run's TensorBoard scalars, parity checks
run in a child process with the official fixtures' kernels."""

from __future__ import annotations

import hashlib
import json
import os
import re
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


PROGRESS = re.compile(r"^\w+: +\d+%\|")  # a tqdm bar ("train:  50%|█████     | 2/4 ...")


def one_error_line(capsys) -> str:
    """The single stderr line of a refused command (besides the progress bars of a training that
    stopped), which must carry no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    lines = [line for line in captured.err.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("unpaired: error: ") and lines[0].count("error:") == 1, lines[0]
    return lines[0]


def file_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (a file: itself), links not followed."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


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


# oneDNN and ATen capped at AVX2: the kernels the official fixtures were made with. On an AVX-512
# CPU oneDNN picks other convolution kernels, which move results by float rounding; it reads the
# cap once, at its first convolution, so checks that must be bit-identical run in a child process.
FIXTURE_KERNELS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def checks_from_child(script: str | Path, kind: str, path: Path, out_dir: Path, src: Path) -> dict[str, list[dict]]:
    """Run ``script kind path OUT`` (a parity test file run as a script) in a fresh process with
    ``src``'s unpaired and the fixtures' kernels (variables already set in the environment win);
    the checks it wrote to OUT, by group. A failure inside fails the test with its traceback."""
    out = out_dir / "checks.json"
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in FIXTURE_KERNELS.items()},
           "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), kind, str(path), str(out)], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.fail(f"computing the {kind} checks of {path.name} failed:\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())
