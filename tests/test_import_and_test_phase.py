"""Official checkpoint import, and the test phase of a trained run."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from conftest import TINY
from unpaired import checkpoint as ckpt
from unpaired.cli import main
from unpaired.models.ugatit.family import arch_from_meta
from unpaired.models.ugatit.networks import NET_NAMES, build_ugatit

FIXTURE = Path(__file__).parent / "parity_fixtures" / "ugatit_parity_full.pt"


def official_file(tmp_path: Path) -> tuple[Path, dict]:
    """An official-format checkpoint (dict of six state_dicts, torch.save) from a parity fixture."""
    fx = torch.load(FIXTURE, weights_only=True)
    path = tmp_path / "demo_params_0001000.pt"
    torch.save({name: fx["init"][name] for name in NET_NAMES}, path)
    return path, fx


def test_import_official_reproduces_official_outputs(tmp_path):
    path, fx = official_file(tmp_path)
    out = tmp_path / "imported.safetensors"
    assert main(["import-official", str(path), "--out", str(out)]) == 0
    states, meta = ckpt.load_weights(out)
    assert meta["model"] == "ugatit" and meta["source"] == path.name
    arch = arch_from_meta(ckpt.read_arch(meta, out))
    m = fx["meta"]
    assert (arch.light, arch.img_size, arch.ch, arch.n_res, arch.n_dis) == (m["light"], m["img_size"], m["ch"], m["n_res"], 6)
    nets = build_ugatit(arch)
    for name, net in nets.items():
        net.load_state_dict(states[name])
    x = fx["inputs"]["real_A"][:1]
    out_img, cam_logit, heatmap = nets["genA2B"](x)
    ref = fx["forward"]["b1"]["genA2B(real_A)"]
    assert torch.allclose(out_img, ref["out"], atol=1e-5) and torch.allclose(cam_logit, ref["cam_logit"], atol=1e-4)


def test_import_official_rejects_other_files(tmp_path, capsys):
    bad = tmp_path / "not_a_checkpoint.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, bad)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    for path in (bad, text, tmp_path / "missing.pt"):
        assert main(["import-official", str(path), "--out", str(tmp_path / "x.safetensors")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path.name) in err[0]
    assert not (tmp_path / "x.safetensors").exists()


def test_import_official_full_model_checks_img_size(tmp_path, capsys):
    path, _ = official_file(tmp_path)
    assert main(["import-official", str(path), "--out", str(tmp_path / "x.safetensors"), "--img-size", "128"]) == 2
    assert "trained at 96" in capsys.readouterr().err


def test_test_phase_writes_translation_heatmap_and_side_by_side(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *TINY, "--iters", "2", "--save-freq", "2",
                 "--print-freq", "2"]) == 0
    # three test pictures per domain in passes of two: more than one batch
    assert main(["test", "--checkpoint", str(run), "--device", "cpu", "--batch-size", "2"]) == 0
    for direction, domain in (("A2B", "testA"), ("B2A", "testB")):
        names = sorted(p.with_suffix(".png").name for p in (tiny_data / domain).iterdir())
        for kind, width in (("translated", 32), ("heatmap", 32), ("side_by_side", 96)):
            folder = run / "test" / direction / kind
            assert sorted(p.name for p in folder.iterdir()) == names
            assert Image.open(folder / names[0]).size == (width, 32)


def test_test_phase_without_run_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder, message in (("nothing", "does not exist"), ("empty", "is not a run directory")):
        assert main(["test", "--run", str(tmp_path / folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(tmp_path / folder) in err[0] and message in err[0]
