"""Faults a user causes or meets, each one line with exit code 2 and no traceback, with what was
written before left intact: a full or read-only disk, write failures of torch.save, safetensors
and TensorBoard's writer thread, damaged checkpoints (skipped for the older complete one), a kill
while old checkpoints are deleted, two trainings in one run directory, bad option values and
damaged input files."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from conftest import SRC, TINY, file_hashes, make_dataset, one_error_line
from unpaired import checkpoint as ckpt
from unpaired import load_translator
from unpaired.cli import main
from unpaired.models.ugatit.networks import NET_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def train_args(data, out, iters=4, *extra):
    return ["train", "--data", str(data), "--out", str(out), *TINY, "--iters", str(iters), "--save-freq", "2",
            "--print-freq", str(iters), "--log-freq", "2", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with checkpoints 2 and 4, and its data; tests change copies of it (``run_copy``)."""
    root = tmp_path_factory.mktemp("faults")
    data = make_dataset(root / "data", n_train=3, n_test=2)
    assert main(train_args(data, root / "run")) == 0
    return root / "run", data


@pytest.fixture
def run_copy(trained, tmp_path):
    run, _ = trained
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def small_disk(tmp_path):
    """``mount(kb, read_only=False)``: a tmpfs of that size under tmp_path (root only), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounted = []

    def mount(kb: int, read_only: bool = False):
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        options = f"size={kb}k" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                              text=True)
        if proc.returncode:
            pytest.skip(f"mount is not permitted here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def checkpoint_files(folder):
    return {name: (folder / name).read_bytes() for name in (ckpt.WEIGHTS, ckpt.STATE)}


# ----------------------------------------------------------------------------- the machine's faults


def test_full_disk_while_training_keeps_the_previous_checkpoint(trained, small_disk, capsys):
    """On a disk with room for one checkpoint, the second one fails: one line, the first survives."""
    run, data = trained
    size = sum(p.stat().st_size for p in (run / "checkpoints" / "0000002").iterdir())
    disk = small_disk(size // 1024 + 400)
    assert main(train_args(data, disk / "run")) == 2
    line = one_error_line(capsys)
    assert "could not write the checkpoint of step 4" in line and "No space left on device" in line
    assert "free some space" in line and "0000002" in line
    assert [p.name for p in ckpt.list_checkpoints(disk / "run" / "checkpoints")] == ["0000002"]
    ckpt.load_weights(disk / "run" / "checkpoints" / "0000002" / ckpt.WEIGHTS)
    ckpt.load_state(disk / "run" / "checkpoints" / "0000002")
    assert not [p for p in (disk / "run").rglob("*") if p.name.startswith((".tmp-", ".trash-")) or
                p.name.endswith(".tmp")]


@pytest.mark.parametrize("kb", [8, 40])
def test_full_disk_at_any_other_write_is_one_line(trained, small_disk, capsys, kb):
    """config.yaml, the TensorBoard log, sample grids: whatever fills the disk, one line."""
    _, data = trained
    disk = small_disk(kb)
    assert main(train_args(data, disk / "run", 4, "--print-freq", "1", "--log-freq", "1")) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and str(disk / "run") in line
    assert "Exception in thread" not in capsys.readouterr().err


def test_full_disk_while_translating_is_one_line_and_leaves_no_partial_file(trained, small_disk, tmp_path, capsys):
    run, data = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(12):
        shutil.copy(sorted((data / "trainA").iterdir())[i % 3], photos / f"{i}.png")
    before = file_hashes(photos)
    disk = small_disk(16)
    assert main(["translate", "--checkpoint", str(run), "--input", str(photos), "--out", str(disk / "out")]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert file_hashes(photos) == before
    written = [p for p in (disk / "out").iterdir()]
    assert not [p for p in written if p.name.endswith(".tmp")]
    for png in (p for p in written if p.suffix == ".png"):
        Image.open(png).load()  # every file there is complete


def test_read_only_output_location_is_refused_before_anything_is_written(trained, small_disk, tmp_path, capsys):
    run, data = trained
    disk = small_disk(64, read_only=True)
    assert main(["translate", "--checkpoint", str(run), "--input", str(data / "testA"), "--out",
                 str(disk / "out")]) == 2
    assert "read-only file system" in one_error_line(capsys)


@pytest.mark.parametrize("writer", ["torch.save", "safetensors"])
def test_checkpoint_writers_that_fail_without_oserror_keep_the_previous_checkpoint(run_copy, monkeypatch,
                                                                                    capsys, writer):
    """torch.save raises RuntimeError and safetensors its own error when the disk is full."""
    before = checkpoint_files(run_copy / "checkpoints" / "0000004")

    def no_space(*args, **kwargs):
        if writer == "torch.save":
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing "
                               "file data/7: file write failed: No space left on device")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    if writer == "torch.save":
        monkeypatch.setattr(torch, "save", no_space)
    else:
        monkeypatch.setattr(ckpt, "save_file", no_space)
    assert main(["train", "--resume", "--out", str(run_copy), "--iters", "6"]) == 2
    line = one_error_line(capsys)
    assert "checkpoint of step 6" in line and "No space left on device" in line and "0000004" in line
    assert [p.name for p in ckpt.list_checkpoints(run_copy / "checkpoints")] == ["0000002", "0000004"]
    assert checkpoint_files(run_copy / "checkpoints" / "0000004") == before
    assert not list((run_copy / "checkpoints").glob(".tmp-*"))


def test_tensorboard_writer_thread_failure_is_one_line(trained, tmp_path, monkeypatch, capsys):
    """The writer's own thread meets the full disk; its traceback is not printed, the error is once."""
    from tensorboard.summary.writer import record_writer

    _, data = trained
    real_write = record_writer.RecordWriter.write
    calls = []

    def fills_up(self, data):
        calls.append(1)
        if len(calls) > 3:  # the file header and the first scalars fit
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", fills_up)
    assert main(train_args(data, tmp_path / "run", 4, "--log-freq", "1")) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and "logs" in line and "No space left on device" in line


def test_output_locations_that_are_files_are_one_line(trained, tmp_path, capsys):
    run, data = trained
    (tmp_path / "file").write_text("x")
    blocked = str(tmp_path / "file" / "below")
    for argv in (["translate", "--checkpoint", str(run), "--input", str(data / "testA"), "--out", blocked],
                 ["test", "--run", str(run), "--out", blocked],
                 ["plot", "--run", str(run), "--out", blocked],
                 ["export", "--checkpoint", str(run), "--out", blocked + ".onnx"],
                 ["train", "--data", str(data), "--out", blocked, *TINY]):
        assert main(argv) == 2, argv
        assert "is a file, not a folder" in one_error_line(capsys), argv


def test_a_closed_pipe_ends_quietly(trained, tmp_path):
    run, _ = trained
    proc = subprocess.Popen([sys.executable, "-m", "unpaired", "plot", "--run", str(run), "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()  # `unpaired plot | head -0`
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and "Exception ignored" not in err


# ----------------------------------------------------------------------------- damaged checkpoints


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


STATE_DAMAGE = {
    "truncated": truncate,
    "garbage": lambda path: path.write_bytes(os.urandom(2000)),
    "foreign dict": lambda path: torch.save({"hello": 1}, path),
    "a list": lambda path: torch.save([1, 2, 3], path),
    "foreign trainer": lambda path: torch.save({**torch.load(path, weights_only=True), "trainer": {"x": 1}}, path),
    "foreign rng": lambda path: torch.save({**torch.load(path, weights_only=True), "rng": {"torch": torch.zeros(3)}},
                                           path),
    "optimisers not mappings": lambda path: torch.save(
        {**(state := torch.load(path, weights_only=True)), "trainer": dict.fromkeys(state["trainer"], "x")}, path),
    "another step": lambda path: torch.save({**torch.load(path, weights_only=True), "step": -3}, path),
    "a step beyond any run": lambda path: torch.save({**torch.load(path, weights_only=True), "step": 2**62}, path),
}


@pytest.mark.parametrize("damage", STATE_DAMAGE)
def test_resume_skips_a_damaged_newest_checkpoint(run_copy, capsys, caplog, damage):
    caplog.set_level(logging.INFO, logger="unpaired")
    STATE_DAMAGE[damage](run_copy / "checkpoints" / "0000004" / ckpt.STATE)
    assert main(["train", "--resume", "--out", str(run_copy), "--iters", "6"]) == 0
    assert "skipped damaged checkpoint" in caplog.text and "0000004" in caplog.text
    assert "resumed from" in caplog.text and "0000002 (step 2)" in caplog.text
    assert "Traceback" not in capsys.readouterr().err
    assert [p.name for p in ckpt.list_checkpoints(run_copy / "checkpoints")] == ["0000002", "0000004", "0000006"]
    ckpt.load_state(run_copy / "checkpoints" / "0000004")  # rewritten when the run reached step 4 again


def test_resume_with_every_checkpoint_damaged_is_one_line(run_copy, capsys):
    for step in ("0000002", "0000004"):
        truncate(run_copy / "checkpoints" / step / ckpt.STATE)
    before = file_hashes(run_copy)
    assert main(["train", "--resume", "--out", str(run_copy), "--iters", "6"]) == 2
    line = one_error_line(capsys)
    assert "every checkpoint in" in line and "0000002" in line and "0000004" in line
    assert file_hashes(run_copy) == before


def rewrite_metadata(path, **changes):
    with safe_open(str(path), "pt") as fh:
        meta, tensors = dict(fh.metadata()), {key: fh.get_tensor(key) for key in fh.keys()}
    meta.update(changes)
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if v is not None})


WEIGHTS_DAMAGE = {
    "truncated": truncate,
    "unknown model": lambda path: rewrite_metadata(path, model="nosuch"),
    "no model": lambda path: rewrite_metadata(path, model=None),
    "malformed arch": lambda path: rewrite_metadata(path, arch="{not json"),
    "arch value of the wrong type": lambda path: rewrite_metadata(path, arch='{"light": "yes", "ch": 4}'),
    "arch value out of range": lambda path: rewrite_metadata(path, arch='{"light": true, "img_size": 32, "ch": -4}'),
}


@pytest.mark.parametrize("damage", WEIGHTS_DAMAGE)
def test_translate_test_eval_and_serve_skip_a_damaged_newest_checkpoint(run_copy, trained, tmp_path, caplog, damage):
    _, data = trained
    WEIGHTS_DAMAGE[damage](run_copy / "checkpoints" / "0000004" / ckpt.WEIGHTS)
    assert main(["translate", "--checkpoint", str(run_copy), "--input", str(data / "testA"), "--out",
                 str(tmp_path / "out")]) == 0
    assert main(["test", "--run", str(run_copy)]) == 0
    assert main(["eval", "--run", str(run_copy), "--metrics", "l1"]) == 0
    assert (run_copy / "eval" / "0000002.json").is_file()
    assert load_translator(run_copy).source.parent.name == "0000002"  # what serve loads
    assert caplog.text.count("skipped damaged checkpoint") >= 4 and "0000004" in caplog.text


@pytest.mark.parametrize("damage", WEIGHTS_DAMAGE)
def test_a_damaged_weights_file_is_one_line(run_copy, trained, tmp_path, capsys, damage):
    _, data = trained
    weights = tmp_path / "w.safetensors"
    shutil.copy(run_copy / "checkpoints" / "0000004" / ckpt.WEIGHTS, weights)
    WEIGHTS_DAMAGE[damage](weights)
    for argv in (["translate", "--checkpoint", str(weights), "--input", str(data / "testA"), "--out",
                  str(tmp_path / "out")],
                 ["export", "--checkpoint", str(weights), "--out", str(tmp_path / "w.onnx")],
                 ["serve", "--checkpoint", str(weights), "--port", "0"]):
        assert main(argv) == 2, argv
        assert str(weights) in one_error_line(capsys), argv


def test_official_files_holding_more_than_tensors_are_one_line(tmp_path, capsys):
    fx = torch.load(os.path.join(os.path.dirname(__file__), "parity_fixtures", "ugatit_parity_full.pt"),
                    weights_only=True)
    states = {name: dict(fx["init"][name]) for name in NET_NAMES}
    cases = {"number": {**states, "genA2B": {**states["genA2B"], "extra": 3}},
             "int key": {**states, "genA2B": {**states["genA2B"], 3: torch.zeros(1)}},
             "not a dict": {**states, "genA2B": 5}, "a list": [1, 2]}
    for name, content in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(content, path)
        assert main(["import-official", str(path), "--out", str(tmp_path / "x.safetensors")]) == 2, name
        assert "is not a checkpoint" in one_error_line(capsys), name
    (tmp_path / "garbage.pt").write_bytes(os.urandom(3000))
    assert main(["import-official", str(tmp_path / "garbage.pt"), "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "not a PyTorch file of tensors" in one_error_line(capsys)


# ----------------------------------------------------------------------------- deleting old checkpoints


def test_a_kill_while_deleting_old_checkpoints_leaves_no_half_deleted_one(run_copy):
    """The process dies (SIGKILL) half-way through deleting the oldest checkpoint; afterwards no
    folder under a checkpoint's name lacks a file, and the next start clears what is left."""
    dying = textwrap.dedent("""
        import os, shutil, signal, sys
        from pathlib import Path
        from unpaired import checkpoint
        from unpaired.cli import main

        real_rmtree = shutil.rmtree

        def rmtree(path, *args, **kwargs):  # deleting a checkpoint: one file, then die as a kill would
            if Path(path).is_dir() and any(p.name == checkpoint.WEIGHTS for p in Path(path).iterdir()):
                next(p for p in sorted(Path(path).iterdir()) if p.is_file()).unlink()
                os.kill(os.getpid(), signal.SIGKILL)
            real_rmtree(path, *args, **kwargs)

        checkpoint.shutil.rmtree = rmtree
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", dying, "train", "--resume", "--out", str(run_copy), "--iters", "6",
                           "--keep-checkpoints", "1"], env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folders = {p.name for p in (run_copy / "checkpoints").iterdir()}
    assert {"0000004", "0000006"} <= folders and any(name.startswith(".trash-0000002") for name in folders)
    for folder in (run_copy / "checkpoints").iterdir():
        if folder.name.isdigit():
            assert {p.name for p in folder.iterdir()} == {ckpt.WEIGHTS, ckpt.STATE}, folder
    assert main(["train", "--resume", "--out", str(run_copy), "--iters", "6"]) == 0  # the next start
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["0000004", "0000006"]


# ----------------------------------------------------------------------------- one training per run directory


HOLD_LOCK = "import sys, time; from unpaired.run import RunDir, RunLock; lock = RunLock(RunDir(sys.argv[1])); " \
            "print('locked', flush=True); time.sleep(120)"


def test_a_second_training_in_the_same_run_is_refused_and_a_dead_ones_lock_is_taken_over(run_copy, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_copy)], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = file_hashes(run_copy)
        assert main(["train", "--resume", "--out", str(run_copy), "--iters", "6"]) == 2
        line = one_error_line(capsys)
        assert "is in use by another training" in line and f"pid {holder.pid}" in line
        assert file_hashes(run_copy) == before
    finally:
        holder.kill()
        holder.wait()
    assert f"pid {holder.pid}" in (run_copy / ".lock").read_text()  # the dead holder's name is still there
    assert main(["train", "--resume", "--out", str(run_copy), "--iters", "6"]) == 0


# ----------------------------------------------------------------------------- values and inputs


@pytest.mark.parametrize("flags,needle", [
    (["--lr", "-1"], "--lr must be at least 0"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--weight-decay=-1e-4"], "--weight-decay must be at least 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    (["--seed", str(2**64)], "--seed must be at most 9223372036854775807"),
    (["--num-workers", "-1"], "--num-workers must be at least 0"),
    (["--n-samples", "0"], "--n-samples must be at least 1"),
    (["--iters", "0"], "--iters must be at least 1"),
    (["--img-size", "4096"], "--img-size must be at most 2048"),
])
def test_train_values_out_of_range_are_one_line(trained, tmp_path, capsys, flags, needle):
    _, data = trained
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *flags]) == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,needle", [
    (["test", "--run", "r", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["serve", "--checkpoint", "r", "--max-upload-mb", "inf"], "argument --max-upload-mb: must be a finite number"),
    (["serve", "--checkpoint", "r", "--max-megapixels", "-1"], "argument --max-megapixels: must be above 0"),
    (["serve", "--checkpoint", "r", "--port", "70000"], "argument --port: must be at most 65535"),
    (["translate", "--checkpoint", "r", "--input", "x", "--out", "o", "--seed", str(2**64)], "argument --seed"),
    (["translate", "--checkpoint", "r", "--input", "x", "--out", "o", "--batch-size", "x"], "must be a whole number"),
    (["eval", "--run", "r", "--kid-subset-size", "1"], "argument --kid-subset-size: must be at least 2"),
    (["demo", "--iters", "0"], "argument --iters: must be at least 1"),
    (["export", "--checkpoint", "r", "--out", "g.onnx", "--opset", "0"], "argument --opset: must be at least 1"),
    (["plot", "--run", "r", "--smooth", "nan"], "--smooth must be in [0, 1)"),
    (["translate", "--checkpoint", "r", "--input", "x", "--out", "o", "--img-size", "100000"],
     "argument --img-size/--size: must be at most 2048"),  # one picture would outgrow memory: killed, no message
])
def test_other_commands_values_out_of_range_are_one_line(tmp_path, capsys, argv, needle):
    os.chdir(tmp_path)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "logs").mkdir()
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_an_unknown_key_in_a_runs_config_is_one_line_on_resume(run_copy, capsys):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text() + "bogus_key: 3\n")
    assert main(["train", "--resume", "--out", str(run_copy)]) == 2
    assert "'bogus_key' is not an option" in one_error_line(capsys)


@pytest.mark.parametrize("model", ["ugatit", "photo2cartoon", "ugatit_tf"])
def test_a_run_of_one_iteration_trains(trained, tmp_path, model):
    """The official learning-rate decay divides by iters // 2, which is 0 for one iteration."""
    _, data = trained
    assert main(["train", "--model", model, "--data", str(data), "--out", str(tmp_path / "run"), *TINY,
                 "--iters", "1"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["0000001"]


def test_truncated_and_garbled_pictures_in_a_folder_are_skipped(trained, tmp_path, caplog):
    """Cut-off animated GIFs and multi-page TIFFs raise IndexError, TypeError, ... in Pillow."""
    run, data = trained
    folder = tmp_path / "in"
    folder.mkdir()
    good = Image.open(sorted((data / "testA").iterdir())[0]).convert("RGB")
    frames = [good.rotate(angle) for angle in (0, 90, 180, 270)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    for source in ("anim.gif", "pages.tif"):
        whole = (folder / source).read_bytes()
        for n in range(1, 8):
            (folder / f"cut{n}_{source}").write_bytes(whole[: len(whole) * n // 8])
    good.save(folder / "good.png")
    before = file_hashes(folder)
    assert main(["translate", "--checkpoint", str(run), "--input", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "good.png").is_file() and "skipping" in caplog.text
    assert file_hashes(folder) == before


@pytest.mark.parametrize("content,needle", [(b"\xff\xfe\x00garbage\n", "not a text file (not UTF-8)"),
                                            (b'a,b\n"x\x00y",z\n', "not a text file (it holds NUL bytes)")])
def test_a_binary_pairs_file_is_one_line(run_copy, trained, tmp_path, capsys, content, needle):
    _, data = trained
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "pairs.csv").write_bytes(content)
    before = file_hashes(copy)
    assert main(["eval", "--run", str(run_copy), "--data", str(copy), "--metrics", "l1", "--device", "cpu"]) == 2
    assert f"the pairs file {copy / 'pairs.csv'} is {needle}" in one_error_line(capsys)
    assert file_hashes(copy) == before
