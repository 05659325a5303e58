"""ONNX export: parity with PyTorch, metadata, and translating with the exported file."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import unpaired.inference.onnx  # noqa: E402
from test_translate import rand_batch, tiny_nets  # noqa: E402
from unpaired import load_translator  # noqa: E402
from unpaired.checkpoint import save_weights, states_of  # noqa: E402
from unpaired.cli import main  # noqa: E402
from unpaired.errors import UserError  # noqa: E402
from unpaired.models.ugatit.options import UGATITArch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_weights(tmp_path, light: bool, size: int):
    arch = UGATITArch(light=light, img_size=size, ch=4, n_res=2, n_dis=4)
    path = tmp_path / f"{'light' if light else 'full'}{size}.safetensors"
    save_weights(path, states_of(tiny_nets(arch, 5)), "ugatit", arch)
    return path


CASES = [(light, size) for light in (True, False) for size in (32, 64)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """B2A generators (light/full, 32/64 px) and their exports; the 64-px ones take any batch."""
    tmp_path = tmp_path_factory.mktemp("export")
    result = {}
    for light, size in CASES:
        loaded = load_translator(tiny_weights(tmp_path, light, size), direction="B2A", device="cpu")
        path = tmp_path / f"{loaded.source.stem}.onnx"
        result[light, size] = loaded, path, loaded.export(path, dynamic_batch=size == 64)
    return result


@pytest.mark.parametrize("light, size", CASES, ids=[f"{'light' if c[0] else 'full'}{c[1]}" for c in CASES])
def test_export_matches_pytorch_and_records_metadata(exported, light, size):
    import onnx

    loaded, path, check = exported[light, size]
    assert list(check) == [path] and set(check[path]) == {"translated", "heatmap"}
    assert check[path]["translated"] <= 1e-4 and check[path]["heatmap"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["direction"] == "B2A" and meta["img_size"] == str(size) and meta["model"] == "ugatit"

    translator = load_translator(path)
    assert translator.direction == "B2A" and translator.img_size == size and translator.arch.light == light
    assert translator.backend_kind == "onnxruntime" and loaded.backend_kind == "torch"
    x = rand_batch(3, size)  # batch 3: one by one for a batch-1 export, at once for a dynamic one
    images, heatmaps = translator.translate_tensor(x)
    ref_images, ref_heatmaps = load_translator(loaded.source, direction="B2A").translate_tensor(x)
    torch.testing.assert_close(images, ref_images, rtol=0, atol=1e-4)
    torch.testing.assert_close(heatmaps, ref_heatmaps, rtol=1e-4, atol=1e-4)


def test_onnx_direction_and_size_are_checked(exported, tmp_path):
    _, path, _ = exported[True, 32]
    with pytest.raises(UserError, match="holds the B2A generator"):
        load_translator(path, direction="A2B")
    with pytest.raises(UserError, match="exported for 32"):
        load_translator(path, img_size=64)
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "x.onnx")]) == 2


def test_cli_export_then_translate_with_the_onnx_file(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="unpaired")
    weights = tiny_weights(tmp_path, True, 32)
    model = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(weights), "--format", "onnx", "--out", str(model)]) == 0
    assert "max abs difference" in caplog.text

    rng = np.random.default_rng(1)
    for i, size in enumerate([(32, 32), (45, 27), (20, 50)]):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).save(tmp_path / f"in{i}.png")
    inputs = [str(tmp_path / f"in{i}.png") for i in range(3)]
    for checkpoint, out in ((weights, "torch"), (model, "onnx")):
        assert main(["translate", "--checkpoint", str(checkpoint), "--input", *inputs,
                     "--out", str(tmp_path / out), "--keep-size"]) == 0
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "torch" / f"in{i}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "onnx" / f"in{i}.png")).astype(int)
        assert np.mean(np.abs(a - b) <= 1) >= 0.99


def test_failed_check_leaves_no_file(tmp_path, monkeypatch, capsys):
    weights = tiny_weights(tmp_path, True, 32)
    monkeypatch.setattr(unpaired.inference.onnx, "TOLERANCE", -1.0)
    assert main(["export", "--checkpoint", str(weights), "--out", str(tmp_path / "bad.onnx")]) == 2
    assert "differs from PyTorch" in capsys.readouterr().err
    assert list(tmp_path.glob("*onnx*")) == []
