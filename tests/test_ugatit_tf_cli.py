"""The TF-exact family as a user runs it: the paper's checkpoints translate, export and import; it trains,
tests on data it has not seen, and refuses configurations that cannot be built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, make_dataset
from test_parity_tf import fixture_dirs
from unpaired.cli import main


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [-1, 1] HWC float image as the 8-bit picture translate writes (round half to even)."""
    return np.clip(np.round((image * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)


def fixture_case(folder: Path, tmp_path: Path) -> tuple[dict, Path, dict]:
    """The fixture's arrays, its input A and B written as PNGs, and its config."""
    arrays = dict(np.load(folder / "fixture.npz"))
    config = json.loads((folder / "meta.json").read_text())["config"]
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    for domain in ("A", "B"):
        Image.fromarray(arrays[f"input/real_{domain}_uint8"]).save(inputs / f"real_{domain}.png")
    return arrays, inputs, config


@pytest.mark.parametrize("folder", fixture_dirs(), ids=lambda p: p.name)
def test_the_tf_checkpoint_folder_translates_as_the_tf_code_does(folder, tmp_path, one_thread):
    """`translate --checkpoint <TF checkpoint folder>` writes the TF code's translation to 8-bit rounding
    (within one level where the float lies on a rounding edge), both directions, with no TensorFlow."""
    arrays, inputs, config = fixture_case(folder, tmp_path)
    size = ["--img-size", str(config["img_size"])]  # a light TF checkpoint does not record its size
    for direction, domain in (("A2B", "A"), ("B2A", "B")):
        out = tmp_path / direction
        assert main(["translate", "--checkpoint", str(folder / "checkpoint"), "--input",
                     str(inputs / f"real_{domain}.png"), "--out", str(out), "--direction", direction,
                     "--device", "cpu", *size]) == 0
        got = np.asarray(Image.open(out / f"real_{domain}.png")).astype(int)
        expected = to_uint8(arrays[f"test/{direction.lower()}/image"][0]).astype(int)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1
        assert (got != expected).mean() < 0.01


def test_export_and_import_of_a_tf_checkpoint_match_it(tmp_path, one_thread):
    folder = next(p for p in fixture_dirs() if json.loads((p / "meta.json").read_text())["config"]["light"] is False)
    _, inputs, config = fixture_case(folder, tmp_path)
    onnx, weights = tmp_path / "g.onnx", tmp_path / "tf.safetensors"
    assert main(["export", "--checkpoint", str(folder / "checkpoint"), "--out", str(onnx)]) == 0
    assert main(["import-official", str(folder / "checkpoint"), "--out", str(weights)]) == 0
    results = {}
    for source in (folder / "checkpoint", onnx, weights):
        out = tmp_path / f"from_{source.name}"
        assert main(["translate", "--checkpoint", str(source), "--input", str(inputs / "real_A.png"),
                     "--out", str(out), "--device", "cpu"]) == 0
        results[source.name] = np.asarray(Image.open(out / "real_A.png")).astype(int)
    assert np.array_equal(results["tf.safetensors"], results["checkpoint"])
    assert np.abs(results["g.onnx"] - results["checkpoint"]).max() <= 1
    assert config["img_size"] == results["checkpoint"].shape[0]


def test_shapes_that_contradict_the_flags_are_refused(tmp_path, capsys):
    folder = next(p for p in fixture_dirs() if json.loads((p / "meta.json").read_text())["config"]["light"] is False)
    size = json.loads((folder / "meta.json").read_text())["config"]["img_size"]
    picture = tmp_path / "x.png"
    Image.new("RGB", (size, size)).save(picture)
    for argv in (["translate", "--checkpoint", str(folder / "checkpoint"), "--input", str(picture),
                  "--out", str(tmp_path / "out"), "--img-size", str(2 * size)],
                 ["import-official", str(folder / "checkpoint"), "--out", str(tmp_path / "w.safetensors"),
                  "--img-size", str(2 * size)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(2 * size) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "w.safetensors").exists()


def test_a_depth_that_cannot_run_is_refused(tiny_data, tmp_path, capsys):
    assert main(["train", "--model", "ugatit_tf", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
                 *TINY, "--n-dis", "6", "--iters", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n_dis 6 is too deep for img_size 32" in err[0]
    assert not (tmp_path / "run").exists()


def test_trains_and_tests_on_data_it_has_never_seen(tiny_data, tmp_path):
    run, unseen = tmp_path / "run", make_dataset(tmp_path / "unseen", n_train=1, n_test=2)
    for folder in ("testA", "testB"):  # other pictures than the training data's
        for path in sorted((unseen / folder).iterdir()):
            Image.open(path).transpose(Image.Transpose.ROTATE_90).save(path)
    assert main(["train", "--model", "ugatit_tf", "--data", str(tiny_data), "--out", str(run), *TINY,
                 "--iters", "3", "--save-freq", "3", "--print-freq", "3", "--gan-type", "hinge",
                 "--n-critic", "2"]) == 0
    assert "gan_type: hinge" in (run / "config.yaml").read_text()
    assert main(["test", "--checkpoint", str(run), "--data", str(unseen), "--out", str(tmp_path / "test")]) == 0
    for direction in ("A2B", "B2A"):
        assert len(list((tmp_path / "test" / direction / "translated").iterdir())) == 2
