"""The main job: train, kill, resume, and every fault the issue lists, on tiny real data."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time

import pytest
import torch

from conftest import TINY, read_scalars, run_cli, spawn_cli
from unpaired import checkpoint as ckpt
from unpaired.cli import main
from unpaired.errors import UserError
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions, resolve_n_dis
from unpaired.models.ugatit.train import UGATITTrainer


def train_args(data, out, iters=8, save_freq=4, *extra):
    return ["train", "--data", str(data), "--out", str(out), *TINY, "--iters", str(iters),
            "--save-freq", str(save_freq), "--print-freq", str(save_freq), "--log-freq", "1", *extra]


def test_train_writes_checkpoints_grids_logs_and_config(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, 8, 4)) == 0
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["0000004", "0000008"]
    assert {p.name for p in (run / "samples").iterdir()} == {f"{d}_{s:07d}.png" for d in ("A2B", "B2A") for s in (4, 8)}
    losses = read_scalars(run, "loss/Generator_loss")
    assert sorted(losses) == list(range(1, 9))
    assert set(read_scalars(run, "lr")) == set(range(1, 9))
    saved = (run / "config.yaml").read_text()
    assert "img_size: 32" in saved and "n_dis: 4" in saved  # depth adapted below 96 px and recorded


@pytest.mark.parametrize("model", ["ugatit", "ugatit_tf"])
def test_killed_run_resumes_with_identical_losses(model, tiny_data, tmp_path):
    """SIGKILL at a random moment after the first checkpoint; resume must replay the same numbers."""
    reference, killed = tmp_path / "ref", tmp_path / "killed"
    run_cli(*train_args(tiny_data, reference, 12, 4, "--model", model))

    proc = spawn_cli(*train_args(tiny_data, killed, 12, 4, "--model", model))
    deadline = time.time() + 120
    while not ckpt.list_checkpoints(killed / "checkpoints") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A checkpoint write cut short leaves a temporary folder behind: resume must ignore it.
    stale = killed / "checkpoints" / ".tmp-0000099-deadbeef"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "weights.safetensors").write_bytes(b"partial")

    run_cli("train", "--resume", "--out", str(killed))
    assert not stale.exists()
    ref, got = read_scalars(reference, "loss/Generator_loss"), read_scalars(killed, "loss/Generator_loss")
    assert sorted(got) == list(range(1, 13))
    assert got == ref  # bit-identical float32 values, including the steps after the resume point
    assert read_scalars(killed, "loss/Discriminator_loss") == read_scalars(reference, "loss/Discriminator_loss")


def test_resume_with_incompatible_config_is_refused(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, 4, 4)) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--ch", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ch 8" in err[0] and "ch=4" in err[0]


def test_resume_with_more_iterations_extends_the_schedule(tiny_data, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, 4, 4)) == 0
    with caplog.at_level("INFO", logger="unpaired"):
        assert main(["train", "--resume", "--out", str(run), "--iters", "8"]) == 0
    assert "schedule now follows the new total" in caplog.text
    lrs = read_scalars(run, "lr")
    # The first run (4 iterations) decayed to 0 by step 4; the resumed steps follow the 8-step
    # schedule instead: lr0·(1 − (s−4)/4) for s = 5..8.
    assert lrs[4] == pytest.approx(0.0, abs=1e-12)
    assert [lrs[s] for s in (5, 6, 7)] == pytest.approx([0.75e-4, 0.5e-4, 0.25e-4])
    assert lrs[8] == pytest.approx(0.0, abs=1e-12)
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")][-1] == "0000008"


def test_full_disk_while_saving_keeps_previous_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, 4, 4)) == 0
    before = (run / "checkpoints" / "0000004" / "weights.safetensors").read_bytes()
    capsys.readouterr()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", no_space)
    assert main(["train", "--resume", "--out", str(run), "--iters", "8"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "0000004" in err
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["0000004"]
    assert (run / "checkpoints" / "0000004" / "weights.safetensors").read_bytes() == before
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_step = UGATITTrainer.step
    calls = {"n": 0}

    def poisoned_step(self, real_a, real_b):
        calls["n"] += 1
        if calls["n"] == 6:
            with torch.no_grad():
                self.raw["genA2B"].DownBlock[1].weight.fill_(float("nan"))
        return real_step(self, real_a, real_b)

    monkeypatch.setattr(UGATITTrainer, "step", poisoned_step)
    assert main(train_args(tiny_data, run, 12, 4)) == 2
    err = capsys.readouterr().err
    assert "diverged at step 6" in err and "0000004" in err
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["0000004"]
    states, _ = ckpt.load_weights(run / "checkpoints" / "0000004" / ckpt.WEIGHTS)
    assert all(torch.isfinite(t).all() for net in states.values() for t in net.values())


def test_bad_inputs_give_one_line_errors(tiny_data, tmp_path, capsys):
    cases = [
        (["train", "--out", str(tmp_path / "a")], "unpaired demo"),
        (["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b")], "does not exist"),
        (["train", "--data", str(tiny_data), "--out", str(tmp_path / "c"), "--img-size", "30"], "multiple of 4"),
        (["train", "--data", str(tiny_data), "--out", str(tmp_path / "d"), "--img-size", "32", "--n-dis", "6"],
         "--n-dis 6"),
        (["train", "--data", str(tiny_data), "--bogus-flag"], "--bogus-flag"),
        (["train", "--resume", "--out", str(tmp_path / "never")], "config.yaml not found"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (argv, err)
    shutil.rmtree(tiny_data / "trainB")
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "e")]) == 2
    assert "trainB" in capsys.readouterr().err


def test_existing_run_is_not_overwritten_without_resume(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, 4, 4)) == 0
    capsys.readouterr()
    assert main(train_args(tiny_data, run, 4, 4)) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("img_size,expected", [(256, 6), (96, 6), (64, 5), (32, 4)])
def test_discriminator_depth_adapts_to_small_images(img_size, expected):
    opts = UGATITOptions(arch=UGATITArch(img_size=img_size))
    resolved, note = resolve_n_dis(opts)
    assert resolved.arch.n_dis == expected
    assert (note is None) == (expected == 6)


def test_explicit_depth_that_cannot_run_is_refused():
    with pytest.raises(UserError, match="cannot run"):
        resolve_n_dis(UGATITOptions(arch=UGATITArch(img_size=64, n_dis=6)))


def test_config_file_with_cli_override(tiny_data, tmp_path):
    cfg_file = tmp_path / "opts.yaml"
    cfg_file.write_text(f"data: {tiny_data}\nch: 4\nn_res: 1\nlight: true\nimg_size: 32\niters: 2\nsave_freq: 2\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--iters", "3", "--device", "cpu",
                 "--num-workers", "0", "--save-freq", "3", "--print-freq", "3"]) == 0
    text = (run / "config.yaml").read_text()
    assert "iters: 3" in text and "ch: 4" in text


def test_periodic_evaluation_logs_scores_and_keeps_the_best_checkpoint(tiny_data, tmp_path):
    names = sorted(p.name for p in (tiny_data / "testA").iterdir())
    (tiny_data / "pairs.csv").write_text("a,b\n" + "".join(f"testA/{n},testB/{n}\n" for n in names))
    run = tmp_path / "run"
    assert main(train_args(tiny_data, run, 4, 4, "--eval-freq", "2", "--eval-metric", "l1")) == 0
    scores = read_scalars(run, "eval/A2B/l1")
    assert sorted(scores) == [2, 4] and all(0 < v < 1 for v in scores.values())
    best = json.loads((run / "checkpoints" / "best" / "best.json").read_text())
    mean = {s: (scores[s] + read_scalars(run, "eval/B2A/l1")[s]) / 2 for s in scores}
    assert best["metric"] == "l1" and best["step"] == min(mean, key=mean.get)
    assert best["value"] == pytest.approx(mean[best["step"]])
    states, meta = ckpt.load_weights(run / "checkpoints" / "best" / ckpt.WEIGHTS)
    assert meta["step"] == str(best["step"]) and "genA2B" in states
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["0000004"]  # "best" is not a resumable step


def test_eval_metric_that_cannot_run_is_refused_at_start(tiny_data, tmp_path, capsys):
    assert main(train_args(tiny_data, tmp_path / "run", 2, 2, "--eval-freq", "1", "--eval-metric", "ssim")) == 2
    assert "--eval-metric ssim cannot run" in capsys.readouterr().err
