"""StarGAN v2 from the command line: a tiny 3-domain run trained by ``unpaired train``, then
``translate`` (latent- and reference-guided), ``export`` (ONNX parity) and ``eval`` (the official
protocol). The network is blocked (``no_network`` from test_metrics, autouse here too)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from test_metrics import TINY, no_network, save_random_alexnet_features, save_tiny  # noqa: F401 (autouse fixture)
from test_stargan_v2 import make_multidomain
from unpaired import checkpoint as ckpt
from unpaired import load_translator
from unpaired.cli import main
from unpaired.data.images import ResizeTransform, load_rgb
from unpaired.evaluation.common import EvalSettings
from unpaired.evaluation.run import evaluate_run
from unpaired.models.stargan_v2.networks import EMA_NETS, build_translation_nets
from unpaired.models.stargan_v2.options import StarGANv2Arch
from unpaired.models.ugatit.networks import build_ugatit
from unpaired.models.ugatit.options import UGATITArch
from unpaired.run import RunDir
from unpaired.viz import to_uint8_image

SIZE = 32
DOMAINS = ("a", "b", "c")
TRAIN = ["--model", "stargan_v2", "--img-size", str(SIZE), "--style-dim", "8", "--latent-dim", "4",
         "--max-conv-dim", "16", "--iters", "1", "--batch-size", "2", "--save-freq", "1", "--print-freq", "1",
         "--num-outs-per-domain", "3", "--device", "cpu", "--num-workers", "0", "--deterministic"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, data folder) of a one-iteration run on three emoji domains (3 train, 2 val images each)."""
    root = tmp_path_factory.mktemp("stargan")
    data = make_multidomain(root / "data", n_train=3, n_val=2)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TRAIN]) == 0
    return root / "run", data


@pytest.fixture
def photos(trained, tmp_path):
    """A folder of two pictures to translate (domain a's validation images)."""
    _, data = trained
    shutil.copytree(data / "val" / "a", tmp_path / "photos")
    return tmp_path / "photos"


def ema_nets(run):
    """The EMA networks read straight from the run's newest weights, independently of translate.py."""
    states, meta = ckpt.load_weights(RunDir(run).latest_checkpoint() / ckpt.WEIGHTS)
    recorded = json.loads(meta["arch"])
    arch = StarGANv2Arch(**{**recorded, "domains": tuple(recorded["domains"])})
    arch.check()
    nets = build_translation_nets(arch)
    for name in EMA_NETS:
        nets[name].load_state_dict(states[name + "_ema"])
        nets[name].eval()
    return nets, arch


def model_input(path):
    return ResizeTransform(SIZE)(load_rgb(path))[None]


def pixels(path):
    return np.asarray(Image.open(path)).astype(int)


def translate(run, photos, out, *extra):
    return main(["translate", "--checkpoint", str(run), "--input", str(photos), "--output", str(out), *extra])


# ----------------------------------------------------------------------------- train: speed options


def test_speed_options_stargan_v2_refuses_accepts_and_trains_with(trained, tmp_path, capsys, caplog):
    """--precision bf16 is refused (StarGAN v2 trains in fp32), --fused-adam trains, and --faithful
    --fused-adam contradict each other; a refused run leaves no run folder behind."""
    _, data = trained

    def train(out, *extra):
        return main(["train", "--data", str(data), "--out", str(tmp_path / out), *TRAIN, *extra])

    refused = {
        "bf16": (["--precision", "bf16"], ("--precision bf16 is not supported for --model stargan_v2",
                                           "it trains in fp32")),
        "faithful": (["--faithful", "--fused-adam"], ("--faithful computes as the official code",
                                                      "cannot be combined with --fused-adam")),
    }
    for out, (extra, expected) in refused.items():
        assert train(out, *extra) == 2, extra
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("unpaired: error:"), (extra, err)
        assert all(text in err[0] for text in expected), (extra, err)
        assert not (tmp_path / out).exists()

    with caplog.at_level(logging.INFO, logger="unpaired"):
        assert train("fused", "--fused-adam", "--iters", "2") == 0
    assert "fused_adam=True" in caplog.text and "precision=fp32" in caplog.text
    run = RunDir(tmp_path / "fused")
    assert [p.name for p in ckpt.list_checkpoints(run.checkpoints)] == ["0000001", "0000002"]
    assert "fused_adam: true" in run.config.read_text()
    state = ckpt.load_state(run.latest_checkpoint())
    assert state["step"] == 2
    optims = state["trainer"]["optims"]
    assert all(group["fused"] for optim in optims.values() for group in optim["param_groups"])
    # per iteration D steps twice (latent, reference), G twice (latent with F and E, reference alone)
    steps = {name: {int(s["step"]) for s in optim["state"].values()} for name, optim in optims.items()}
    assert steps == {"generator": {4}, "mapping_network": {2}, "style_encoder": {2}, "discriminator": {4}}


# ----------------------------------------------------------------------------- translate


def test_latent_guided_outputs_are_seeded_diverse_and_from_the_ema_networks(trained, photos, tmp_path):
    run, _ = trained
    assert translate(run, photos, tmp_path / "s7", "--target-domain", "b", "--num", "3", "--seed", "7") == 0
    stems = sorted(p.stem for p in photos.iterdir())
    assert sorted(p.name for p in (tmp_path / "s7").iterdir()) == sorted(
        f"{stem}_b_seed7_{k}.png" for stem in stems for k in range(3))
    for stem in stems:
        outs = [pixels(tmp_path / "s7" / f"{stem}_b_seed7_{k}.png") for k in range(3)]
        assert all(out.shape == (SIZE, SIZE, 3) for out in outs)
        assert all(not np.array_equal(outs[i], outs[j]) for i, j in ((0, 1), (0, 2), (1, 2)))

    # the same seed gives the same pixels (--model given explicitly this time); another seed others
    assert translate(run, photos, tmp_path / "again", "--model", "stargan_v2", "--target-domain", "b",
                     "--num", "3", "--seed", "7") == 0
    assert translate(run, photos, tmp_path / "s8", "--target-domain", "b", "--num", "3", "--seed", "8") == 0
    for stem in stems:
        for k in range(3):
            name = f"{stem}_b_seed7_{k}.png"
            assert np.array_equal(pixels(tmp_path / "s7" / name), pixels(tmp_path / "again" / name))
            other_seed = tmp_path / "s8" / f"{stem}_b_seed8_{k}.png"
            assert not np.array_equal(pixels(tmp_path / "s7" / name), pixels(other_seed))

    # output k is G_ema(x, F_ema(z_k, b)) with z_k the k-th code drawn from the seed, for every input
    nets, arch = ema_nets(run)
    z = torch.randn(3, arch.latent_dim, generator=torch.Generator().manual_seed(7))
    x = model_input(photos / f"{stems[1]}.png")
    with torch.no_grad():
        expected = nets["generator"](x, nets["mapping_network"](z[2:3], torch.tensor([DOMAINS.index("b")])))
    assert np.abs(pixels(tmp_path / "s7" / f"{stems[1]}_b_seed7_2.png") - to_uint8_image(expected[0])).max() <= 1


def test_reference_guided_takes_the_reference_style(trained, photos, tmp_path):
    run, data = trained
    refs = sorted((data / "val" / "c").iterdir())
    for ref in refs:
        assert translate(run, photos, tmp_path / "out", "--target-domain", "c", "--reference", str(ref)) == 0
    stem = sorted(photos.iterdir())[0].stem
    first, second = (tmp_path / "out" / f"{stem}_c_ref-{ref.stem}.png" for ref in refs)
    assert not np.array_equal(pixels(first), pixels(second))
    assert len(list((tmp_path / "out").iterdir())) == 2 * len(refs)

    nets, _ = ema_nets(run)
    with torch.no_grad():
        style = nets["style_encoder"](model_input(refs[0]), torch.tensor([DOMAINS.index("c")]))
        expected = nets["generator"](model_input(photos / f"{stem}.png"), style)
    assert np.abs(pixels(first) - to_uint8_image(expected[0])).max() <= 1


def test_user_errors_are_one_line_with_exit_code_2(trained, photos, tmp_path, capsys):
    run, data = trained
    ref = str(sorted((data / "val" / "c").iterdir())[0])
    ugatit = tmp_path / "ugatit.safetensors"
    light = UGATITArch(light=True, img_size=SIZE, ch=4, n_res=1, n_dis=4)
    torch.manual_seed(0)
    ckpt.save_weights(ugatit, ckpt.states_of(build_ugatit(light)), "ugatit", light)
    out = str(tmp_path / "out")
    cases = {
        "unknown domain 'zebra': this model translates into a, b, c": ["--target-domain", "zebra"],
        "holds a stargan_v2 model: choose --target-domain D (one of a, b, c)": [],
        "--num and --seed are for latent-guided": ["--target-domain", "c", "--reference", ref, "--num", "2"],
        "--num and --seed are for latent": ["--target-domain", "c", "--reference", ref, "--seed", "1"],
        "--heatmap: " + str(run) + " holds a stargan_v2 model, which has no attention map": [
            "--target-domain", "c", "--heatmap"],
        "--direction does not apply to " + str(run) + ", which holds a stargan_v2 model": [
            "--target-domain", "c", "--direction", "B2A"],
        "--model ugatit, but " + str(run) + " holds a stargan_v2 model": ["--model", "ugatit", "--target-domain", "c"],
        "not a readable image": ["--target-domain", "c", "--reference", str(photos)],
    }
    for expected, args in cases.items():
        assert translate(run, photos, out, *args) == 2, args
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("unpaired: error:") and expected in err[0], (args, err)
    other = {
        "--target-domain does not apply to " + str(ugatit) + ", which holds a ugatit model": [
            "translate", "--checkpoint", str(ugatit), "--input", str(photos), "--output", out, "--target-domain", "b"],
        "holds a stargan_v2 model, which takes no direction option": ["export", "--checkpoint", str(run), "--output",
                                                                      str(tmp_path / "g.onnx"), "--direction", "A2B"],
        "StarGAN v2's protocol reports fid and lpips; kid is for two-domain runs": [
            "eval", "--run", str(run), "--metrics", "kid,fid"],
        "--direction is for two-domain runs": ["eval", "--run", str(run), "--direction", "A2B"],
    }
    for expected, args in other.items():
        assert main(args) == 2, args
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and expected in err[0], (args, err)
    assert not (tmp_path / "out").exists() and not (tmp_path / "g.onnx").exists()


# ----------------------------------------------------------------------------- export


def test_onnx_export_matches_pytorch_and_translates_like_it(trained, photos, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    run, data = trained
    model = tmp_path / "g.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--output", str(model)]) == 0
    reference_model = tmp_path / "g_reference.onnx"
    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert (meta["model"], meta["guide"], meta["companion"]) == ("stargan_v2", "latent", "g_reference.onnx")
    assert json.loads(meta["domains"]) == list(DOMAINS) and meta["img_size"] == str(SIZE) and meta["latent_dim"] == "4"
    assert {p.key: p.value for p in onnx.load(str(reference_model)).metadata_props}["guide"] == "reference"

    # every domain through onnxruntime vs the EMA networks in PyTorch (batch-1 graphs)
    nets, _ = ema_nets(run)
    latent = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(reference_model), providers=["CPUExecutionProvider"])
    assert [i.name for i in latent.get_inputs()] == ["image", "z", "y"]
    assert [i.name for i in reference.get_inputs()] == ["image", "reference", "y"]
    g = torch.Generator().manual_seed(3)
    for domain in range(len(DOMAINS)):
        x, x_ref = (torch.rand(1, 3, SIZE, SIZE, generator=g) * 2 - 1 for _ in range(2))
        z, y = torch.randn(1, 4, generator=g), torch.tensor([domain])
        with torch.no_grad():
            by_latent = nets["generator"](x, nets["mapping_network"](z, y)).numpy()
            by_reference = nets["generator"](x, nets["style_encoder"](x_ref, y)).numpy()
        got = latent.run(None, {"image": x.numpy(), "z": z.numpy(), "y": y.numpy()})[0]
        assert np.abs(got - by_latent).max() <= 1e-4
        got = reference.run(None, {"image": x.numpy(), "reference": x_ref.numpy(), "y": y.numpy()})[0]
        assert np.abs(got - by_reference).max() <= 1e-4

    # a dynamic-batch export is checked on one batch holding every domain
    diffs = load_translator(run, device="cpu").export(tmp_path / "dyn.onnx", dynamic_batch=True)
    assert list(diffs) == [tmp_path / "dyn.onnx", tmp_path / "dyn_reference.onnx"]
    assert all(list(found) == ["translated"] for found in diffs.values())
    assert all(diff <= 1e-4 for found in diffs.values() for diff in found.values())
    batch = ort.InferenceSession(str(tmp_path / "dyn.onnx"), providers=["CPUExecutionProvider"])
    x, z, y = torch.rand(3, 3, SIZE, SIZE, generator=g) * 2 - 1, torch.randn(3, 4, generator=g), torch.tensor([2, 0, 1])
    with torch.no_grad():
        expected = nets["generator"](x, nets["mapping_network"](z, y)).numpy()
    assert np.abs(batch.run(None, {"image": x.numpy(), "z": z.numpy(), "y": y.numpy()})[0] - expected).max() <= 1e-4

    # translate runs the exported files (the reference graph found beside the latent one)
    ref = str(sorted((data / "val" / "b").iterdir())[0])
    for checkpoint, out in ((run, "torch"), (model, "onnx")):
        assert translate(checkpoint, photos, tmp_path / out, "--target-domain", "a", "--num", "2", "--seed", "1") == 0
        assert translate(checkpoint, photos, tmp_path / out, "--target-domain", "b", "--reference", ref) == 0
    names = sorted(p.name for p in (tmp_path / "torch").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "onnx").iterdir()) and len(names) == 2 * 3
    for name in names:
        assert np.abs(pixels(tmp_path / "torch" / name) - pixels(tmp_path / "onnx" / name)).max() <= 1


# ----------------------------------------------------------------------------- eval

TASKS = {"b2a", "c2a", "a2b", "c2b", "a2c", "b2c"}


def test_eval_offline_reports_every_task_and_why_metrics_were_skipped(trained, capsys):
    run, _ = trained
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 0
    report = json.loads((run / "eval" / "0000001.json").read_text(encoding="utf-8"))
    assert report["format"] == "unpaired-eval-stargan-v2/1" and "StarGAN v2 official protocol" in report["protocol"]
    assert set(report["skipped"]) == {"fid", "lpips"}
    assert all("could not be downloaded" in why for why in report["skipped"].values())
    for guide in ("latent", "reference"):
        assert set(report["results"][guide]) == TASKS | {"mean"}
        assert report["results"][guide]["a2b"] == {"n_source": 2, "n_target_train": 3, "n_outputs": 3}
    out = capsys.readouterr().out
    assert "StarGAN v2 official protocol" in out and "Skipped:" in out and "--inception-weights PATH" in out


def test_eval_with_local_weights_scores_every_task(trained, tmp_path):
    run, data = trained
    settings = EvalSettings(device="cpu", inception=TINY, inception_weights=save_tiny(tmp_path / "tiny.pt"),
                            lpips_weights=save_random_alexnet_features(tmp_path / "alexnet.pth"))
    report, markdown = evaluate_run(run, settings=settings)
    assert report["skipped"] == {} and list(report["metrics"]) == ["fid", "lpips"]
    for guide in ("latent", "reference"):
        tasks = report["results"][guide]
        assert set(tasks) == TASKS | {"mean"}
        for task in TASKS:
            assert tasks[task]["fid"]["value"] > 0 and tasks[task]["lpips"]["value"] > 0
        for name in ("fid", "lpips"):
            assert tasks["mean"][name]["value"] == pytest.approx(np.mean([tasks[t][name]["value"] for t in TASKS]))
    assert report["results"]["latent"]["a2b"]["fid"] != report["results"]["reference"]["a2b"]["fid"]
    table = (run / "eval" / "0000001.md").read_text(encoding="utf-8")
    assert table == markdown
    assert json.loads((run / "eval" / "0000001.json").read_text(encoding="utf-8")) == report
    assert "| task | FID (latent) | LPIPS (latent) | FID (reference) | LPIPS (reference) |" in table
    assert all(f"| {task} | " in table for task in TASKS | {"mean"})
