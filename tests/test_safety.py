"""No command destroys a file it did not make: outputs never replace inputs, never each other, and
an existing file is replaced only when the same command made it (``unpaired.guard``).

Every refusal is one line with exit code 2, and the whole folder it worked in is byte-identical
afterwards (hashed before and after).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import TINY, file_hashes, make_dataset, one_error_line
from unpaired.cli import main
from unpaired.guard import MADE
from unpaired.models.ugatit.networks import NET_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny two-checkpoint run (steps 2 and 4) and its data, shared read-only by the tests."""
    root = tmp_path_factory.mktemp("safety")
    data = make_dataset(root / "data", n_train=3, n_test=2)
    run = root / "run"
    assert main(["train", "--data", str(data), "--out", str(run), *TINY, "--iters", "4", "--save-freq", "2",
                 "--print-freq", "4", "--log-freq", "2"]) == 0
    return run, data


@pytest.fixture
def photos(trained, tmp_path):
    """A folder of the user's pictures: two PNGs and a JPEG."""
    _, data = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, source in zip(("a.png", "b.png"), sorted((data / "testA").iterdir())):
        shutil.copy(source, folder / name)
    Image.open(folder / "a.png").convert("RGB").save(folder / "c.jpg")
    return folder


def refused(capsys, tmp_path, argv, *needles) -> str:
    """Run a command that must be refused: exit code 2, one line naming ``needles``, nothing changed."""
    before = file_hashes(tmp_path)
    assert main(argv) == 2, argv
    line = one_error_line(capsys)
    assert all(needle in line for needle in needles), line
    assert file_hashes(tmp_path) == before
    return line


# ----------------------------------------------------------------------------- translate


@pytest.mark.parametrize("form", ["file", "glob", "folder-as-link"])
def test_translate_never_replaces_its_input(trained, photos, tmp_path, capsys, form):
    run, _ = trained
    if form == "folder-as-link":  # --out is a link to the photos' folder: resolved, it is the input
        (tmp_path / "link").symlink_to(photos)
        argv = ["--input", str(photos / "a.png"), "--out", str(tmp_path / "link")]
    else:
        argv = ["--input", str(photos / "a.png") if form == "file" else str(photos / "*.png"), "--out", str(photos)]
    refused(capsys, tmp_path, ["translate", "--checkpoint", str(run), *argv], "a.png is an input")


def test_translate_replaces_its_own_results_and_nothing_else(trained, photos, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "out"
    command = ["translate", "--checkpoint", str(run), "--input", str(photos), "--out", str(out)]
    assert main(command) == 0
    assert sorted(p.name for p in out.iterdir()) == [MADE, "a.png", "b.png", "c.png"]
    assert main(command) == 0  # earlier translations are the command's own: replaced
    (out / "b.png").write_bytes(b"the user edited this one")
    refused(capsys, tmp_path, command, "out/b.png exists and was not written by this command")
    (out / "b.png").unlink()
    Image.new("RGB", (8, 8)).save(out / "d.png")  # the user's file beside the results: left alone
    (photos / "d.jpg").write_bytes((photos / "c.jpg").read_bytes())
    refused(capsys, tmp_path, command, "out/d.png exists and was not written by this command")


def test_outputs_of_two_inputs_never_collide(trained, tmp_path, capsys, caplog):
    """With --heatmap, a.jpg writes a.png and a_heatmap.png; an input a_heatmap.png would write the
    latter again: it is skipped with a warning, and every output is written once."""
    run, data = trained
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = sorted((data / "testA").iterdir())[:2]
    Image.open(first).convert("RGB").save(folder / "a.jpg")
    shutil.copy(second, folder / "a_heatmap.png")
    out = tmp_path / "out"
    assert main(["translate", "--checkpoint", str(run), "--input", str(folder), "--out", str(out), "--heatmap"]) == 0
    assert "skipping" in caplog.text and "a_heatmap.png is already" in caplog.text
    made = (out / MADE).read_text().splitlines()
    assert sorted(line.split("  ")[1] for line in made) == ["a.png", "a_heatmap.png"]  # each written once


# ----------------------------------------------------------------------------- export, import-official


def test_export_never_replaces_its_source_or_a_file_it_did_not_export(trained, tmp_path, capsys):
    run, _ = trained
    weights = tmp_path / "w.safetensors"
    shutil.copy(run / "checkpoints" / "0000004" / "weights.safetensors", weights)
    refused(capsys, tmp_path, ["export", "--checkpoint", str(weights), "--out", str(weights)], "is an input")
    (tmp_path / "notes.onnx").write_text("the user's")
    refused(capsys, tmp_path, ["export", "--checkpoint", str(run), "--out", str(tmp_path / "notes.onnx")],
            "was not written by this command")
    graph = tmp_path / "g.onnx"
    assert main(["export", "--checkpoint", str(run), "--out", str(graph)]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", str(graph), "--dynamic-batch"]) == 0  # its own
    refused(capsys, tmp_path, ["export", "--checkpoint", str(run), "--out", str(tmp_path)], "is a folder")


def official_file(path):
    fx = torch.load(Path(__file__).parent / "parity_fixtures" / "ugatit_parity_full.pt", weights_only=True)
    torch.save({name: fx["init"][name] for name in NET_NAMES}, path)
    return path


def test_import_official_never_replaces_its_source_or_weights_it_did_not_import(trained, tmp_path, capsys):
    run, _ = trained
    source = official_file(tmp_path / "a.pt")
    refused(capsys, tmp_path, ["import-official", str(source), "--out", str(source)], "a.pt is an input")
    trained_weights = tmp_path / "trained.safetensors"  # weights of a training run, not an import
    shutil.copy(run / "checkpoints" / "0000004" / "weights.safetensors", trained_weights)
    refused(capsys, tmp_path, ["import-official", str(source), "--out", str(trained_weights)],
            "was not written by this command")
    out = tmp_path / "imported.safetensors"
    assert main(["import-official", str(source), "--out", str(out)]) == 0
    assert main(["import-official", str(source), "--out", str(out)]) == 0  # its own import: replaced
    (tmp_path / "file").write_text("x")
    refused(capsys, tmp_path, ["import-official", str(source), "--out", str(tmp_path / "file" / "x.safetensors")],
            "is a file, not a folder")


# ----------------------------------------------------------------------------- runs: train, demo, test, eval


def test_demo_refuses_a_run_that_is_not_a_demo_run(trained, tmp_path, capsys):
    run, _ = trained
    mine = tmp_path / "mine"
    shutil.copytree(run, mine)
    refused(capsys, tmp_path, ["demo", "--out", str(mine), "--iters", "6"], "not the demo's")


def test_train_never_takes_over_a_folder_or_config_of_the_users(trained, tmp_path, capsys):
    _, data = trained
    flags = [*TINY, "--iters", "2", "--data", str(data)]
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("light: true\nch: 4\n")  # the user's options, beside the run to be
    refused(capsys, tmp_path, ["train", "--out", str(folder), *flags], "config.yaml exists and was not written")
    refused(capsys, tmp_path, ["train", "--config", str(folder / "config.yaml"), "--out", str(folder), *flags],
            "config.yaml is an input")
    (folder / "config.yaml").unlink()
    (folder / "samples").mkdir()
    refused(capsys, tmp_path, ["train", "--out", str(folder), *flags], "samples exists and was not written")
    refused(capsys, tmp_path, ["train", "--out", str(data / "trainA" / "run"), *flags], "lies inside")


def test_a_fresh_run_takes_over_what_an_attempt_left_before_its_first_checkpoint(trained, tmp_path):
    _, data = trained
    out = tmp_path / "run"
    flags = ["--data", str(data), "--out", str(out), *TINY, "--iters", "2", "--save-freq", "2"]
    assert main(["train", *flags, "--lr", "1e-3"]) == 0
    shutil.rmtree(out / "checkpoints")  # as if it had been killed before its first checkpoint
    assert main(["train", *flags]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 1e-4


def test_test_and_eval_outputs_never_land_in_their_inputs(trained, tmp_path, capsys):
    run, data = trained
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    refused(capsys, tmp_path, ["test", "--run", str(run), "--data", str(copy), "--out", str(copy / "testA" / "out")],
            "lies inside")
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    (mine / "eval" / "0000004.json").mkdir(parents=True)
    refused(capsys, tmp_path, ["eval", "--run", str(mine), "--data", str(copy), "--metrics", "l1"], "is a folder")


def test_a_runs_own_folder_that_links_elsewhere_is_not_taken_as_unpaireds(trained, tmp_path, capsys):
    """RUN/test, RUN/plots: unpaired's as a whole, but not when they are links to the user's folders."""
    run, data = trained
    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    pictures = tmp_path / "pictures"
    name = sorted((data / "testA").iterdir())[0].with_suffix(".png").name
    (pictures / "A2B" / "translated").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(pictures / "A2B" / "translated" / name)
    Image.new("RGB", (4, 4)).save(pictures / "lr.png")
    shutil.rmtree(mine / "test", ignore_errors=True)
    (mine / "test").symlink_to(pictures, target_is_directory=True)
    (mine / "plots").symlink_to(pictures, target_is_directory=True)
    refused(capsys, tmp_path, ["test", "--run", str(mine), "--device", "cpu"], f"{name} exists and was not written")
    refused(capsys, tmp_path, ["plot", "--run", str(mine)], "lr.png exists and was not written")


def test_plot_never_replaces_a_picture_of_the_users(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "plots"
    out.mkdir()
    Image.new("RGB", (4, 4)).save(out / "lr.png")
    refused(capsys, tmp_path, ["plot", "--run", str(run), "--out", str(out)], "lr.png exists and was not written")
    refused(capsys, tmp_path, ["plot", "--run", str(run), "--out", str(run / "logs")], "lies inside")


def test_prepare_faces_never_writes_into_its_input_or_over_the_users_pictures(photos, tmp_path, capsys):
    """Checked before MediaPipe is needed, so this runs without the faces extra."""
    refused(capsys, tmp_path, ["prepare-faces", "--input", str(photos), "--out", str(photos / "faces")],
            "which this command reads")
    out = tmp_path / "crops"
    out.mkdir()
    Image.new("RGB", (4, 4)).save(out / "c.png")  # where c.jpg's crop would go
    refused(capsys, tmp_path, ["prepare-faces", "--input", str(photos), "--out", str(out)], "c.png exists")
    numbered = tmp_path / "numbered"
    numbered.mkdir()
    Image.new("RGB", (4, 4)).save(numbered / "b_2.png")  # where b.png's second face would go with --all
    refused(capsys, tmp_path, ["prepare-faces", "--input", str(photos), "--out", str(numbered), "--all"],
            "b_2.png exists")
