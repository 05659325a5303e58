"""The public inference API: ``unpaired.load_translator`` on every kind of model file, the one
result type it returns, and what ``import unpaired`` exposes (and does not import)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unpaired
from test_translate import FULL, LIGHT, SIZE, save_run, tiny_nets
from unpaired import TranslationOutput, load_translator
from unpaired.checkpoint import save_weights, states_of
from unpaired.errors import UserError
from unpaired.inference.loading import identify
from unpaired.models.photo2cartoon.networks import build_photo2cartoon
from unpaired.models.stargan_v2.networks import build_stargan_v2
from unpaired.models.stargan_v2.options import StarGANv2Arch

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, tuple[Path, dict, str, str, str]]:
    """Every kind of file load_translator opens: kind -> (path, load options, model, direction, backend)."""
    root = tmp_path_factory.mktemp("models")
    weights = save_run(root / "run", 5, tiny_nets(LIGHT, 1), LIGHT)
    files = {
        "run folder": (root / "run", {}, "ugatit", "A2B", "torch"),
        "checkpoint folder": (weights.parent, {"direction": "B2A"}, "ugatit", "B2A", "torch"),
        "safetensors": (weights, {}, "ugatit", "A2B", "torch"),
    }
    # An official U-GAT-IT file: the six state_dicts, torch.save'd (a full model records its size).
    torch.save(states_of(tiny_nets(FULL, 2)), root / "demo_params_0000100.pt")
    files["official ugatit .pt"] = (root / "demo_params_0000100.pt", {}, "ugatit", "A2B", "torch")
    # The photo2cartoon authors' file: the generators' state_dicts (a light model: the size is given).
    torch.manual_seed(3)
    cartoon = build_photo2cartoon(LIGHT)
    torch.save({name: cartoon[name].state_dict() for name in ("genA2B", "genB2A")}, root / "photo2cartoon_weights.pt")
    files["official photo2cartoon .pt"] = (root / "photo2cartoon_weights.pt", {"img_size": SIZE, "direction": "B2A"},
                                           "photo2cartoon", "B2A", "torch")
    if all(find_spec(module) for module in ("onnx", "onnxruntime")):
        onnx = root / "exported.onnx"
        load_translator(weights, direction="B2A", device="cpu").export(onnx)
        files["exported .onnx"] = (onnx, {}, "ugatit", "B2A", "onnxruntime")
    return files


KINDS = ["run folder", "checkpoint folder", "safetensors", "official ugatit .pt", "official photo2cartoon .pt",
         "exported .onnx"]


def pictures(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(count)
    return [Image.fromarray(rng.integers(0, 256, (24 + 8 * i, 40, 3), np.uint8)) for i in range(count)]


@pytest.mark.parametrize("kind", KINDS)
def test_load_translator_opens_every_kind_of_model_file(model_files, kind):
    if kind not in model_files:
        pytest.skip("exporting needs the onnx extra: pip install 'unpaired[onnx]'")
    path, options, model, direction, backend = model_files[kind]
    translator = load_translator(path, device="cpu", **options)
    assert identify(path, options.get("img_size")).model == model

    described = repr(translator)
    assert described.startswith("TwoDomainTranslator(")
    for field in (f"model={model!r}", f"direction={direction!r}", f"img_size={SIZE}", "device='cpu'",
                  f"backend={backend!r}"):
        assert field in described, (field, described)
    assert translator.to("cpu") is translator

    one = translator(pictures(1)[0])
    assert isinstance(one, TranslationOutput) and len(one) == 1
    assert isinstance(one.images[0], Image.Image) and one.images[0].size == (SIZE, SIZE)
    assert isinstance(one[0].heatmap, np.ndarray) and one[0].heatmap.shape == (SIZE // 4, SIZE // 4)
    assert one[0].source == 0

    three = translator(pictures(3), batch_size=2)
    assert isinstance(three, TranslationOutput) and len(three) == 3
    assert [t.source for t in three] == [0, 1, 2] and len(three.images) == 3
    assert all(isinstance(t.heatmap, np.ndarray) for t in three)


def test_the_package_namespace_is_lazy_and_complete():
    assert "load_translator" in dir(unpaired)
    assert set(unpaired.__all__) <= set(dir(unpaired))
    for name in unpaired.__all__:
        assert getattr(unpaired, name) is not None, name
    assert unpaired.load_translator is load_translator and unpaired.UserError is UserError
    with pytest.raises(AttributeError, match="no attribute 'translate'"):
        unpaired.translate  # noqa: B018 (the old module is gone)
    code = "import unpaired, sys; assert 'torch' not in sys.modules, 'import unpaired imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert proc.returncode == 0, proc.stderr


def test_stargan_v2_refuses_a_direction_in_one_line(tmp_path):
    arch = StarGANv2Arch(img_size=32, style_dim=8, latent_dim=4, max_conv_dim=16, domains=("a", "b"))
    arch.check()
    path = tmp_path / "stargan.safetensors"
    save_weights(path, states_of(build_stargan_v2(arch)), "stargan_v2", arch)
    assert repr(load_translator(path, device="cpu")).startswith("StarGANv2Translator(model='stargan_v2'")
    with pytest.raises(UserError) as refused:
        load_translator(path, direction="A2B", device="cpu")
    message = str(refused.value)
    assert "\n" not in message and "stargan_v2" in message and "takes no direction option" in message
