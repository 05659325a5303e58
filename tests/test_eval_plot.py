"""`unpaired eval` and `unpaired plot` end to end on tiny runs, and the training-time evaluation.

Runs are built directly (random tiny generators saved as a checkpoint) so no test trains.
The network is blocked (``no_network`` from test_metrics, autouse here too).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from conftest import make_dataset
from test_metrics import TINY, no_network, save_random_alexnet_features, save_tiny  # noqa: F401 (autouse fixture)
from unpaired import checkpoint as ckpt
from unpaired import load_translator
from unpaired import metrics as m
from unpaired.cli import main
from unpaired.errors import UserError
from unpaired.evaluation.common import EvalSettings, KIDSettings, translate_all
from unpaired.evaluation.run import evaluate_run
from unpaired.evaluation.two_domain import evaluate_generators, load_test_set
from unpaired.metrics import METRICS
from unpaired.models.ugatit.networks import build_generator
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions
from unpaired.options import build, save_yaml
from unpaired.plots import group_tags, plot_run, read_scalars, smooth_curve

FAST_KID = KIDSettings(subset_size=1000, n_subsets=10, seed=0)


def write_pairs(data, names):
    lines = ["a,b,note"] + [f"testA/{n},testB/{n},x" for n in names]
    (data / "pairs.csv").write_text("\n".join(lines) + "\n")


def make_run(root, data, step=3):
    """A run folder holding one checkpoint of two random tiny generators and its config."""
    opts = build(UGATITOptions, ("the test", {"data": str(data), "out": str(root), "light": True, "img_size": 32,
                                              "ch": 4, "n_res": 1, "n_dis": 4}))
    torch.manual_seed(0)
    nets = {name: build_generator(opts.arch) for name in ("genA2B", "genB2A")}
    ckpt.save_checkpoint(root / "checkpoints", step, nets, "ugatit", opts.arch, {"step": step}, keep=1)
    save_yaml(opts, root / "config.yaml")
    return root


@pytest.fixture
def paired_run(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=1, n_test=4)
    names = sorted(p.name for p in (data / "testA").iterdir())
    write_pairs(data, names[::-1])  # reversed order: pairs are matched by path, not position
    return make_run(tmp_path / "run", data), data


def test_evaluate_run_scores_match_independent_computation(paired_run, tmp_path):
    run, data = paired_run
    weights = save_tiny(tmp_path / "tiny.pt")
    settings = EvalSettings(kid=FAST_KID, device="cpu", inception=TINY, inception_weights=weights,
                            lpips_weights=save_random_alexnet_features(tmp_path / "alexnet.pth"))
    report, markdown = evaluate_run(run, settings=settings)
    assert report["skipped"] == {}
    assert list(report["metrics"]) == list(METRICS)
    assert report["step"] == 3 and report["img_size"] == 32
    saved = json.loads((run / "eval" / "0000003.json").read_text(encoding="utf-8"))
    assert saved == report
    table = (run / "eval" / "0000003.md").read_text(encoding="utf-8")
    assert table == markdown
    assert "| metric | A2B | B2A |" in table and METRICS["mean_kid"].label in table

    # Recompute A2B by hand: translate testA, compare with testB by file name. Translate in batches
    # of the evaluation's size: CPU conv results can differ in the last bit with the batch size, which
    # can move a pixel by one 8-bit level.
    test = load_test_set(data, 32)
    translator = load_translator(run, direction="A2B", device="cpu", half=False)
    fake = translate_all(lambda x: translator.translate_tensor(x)[0], test.a.images, settings.batch_size)
    truth = test.b.images[[test.b.names.index(n) for n in test.a.names]]
    a2b = report["results"]["A2B"]
    assert (a2b["n_source"], a2b["n_target"], a2b["n_pairs"]) == (4, 4, 4)
    assert a2b["l1"]["value"] == pytest.approx(float(m.l1_per_image(fake, truth).mean()), rel=1e-9)
    assert a2b["psnr"]["value"] == pytest.approx(float(m.psnr_per_image(fake, truth).mean()), rel=1e-9)
    extractor = m.FeatureExtractor(m.open_pretrained(TINY, weights))
    fake_f, real_b, real_a = extractor(fake), extractor(test.b.images), extractor(test.a.images)
    assert a2b["fid"]["value"] == pytest.approx(m.frechet_distance(fake_f, real_b), rel=1e-6)
    expected_kid = m.kid(fake_f, real_b, 1000, 10, 0)
    assert a2b["kid"]["value"] == pytest.approx(expected_kid.value, rel=1e-6)
    assert a2b["kid"]["std"] == pytest.approx(expected_kid.std, abs=1e-9)
    assert a2b["mean_kid"]["value"] == pytest.approx(m.mean_kid(fake_f, real_b, real_a, 1000, 10, 0).value, rel=1e-6)
    assert 0 < a2b["lpips"]["value"] and -1 <= a2b["ssim"]["value"] <= 1
    assert report["results"]["B2A"]["l1"]["value"] != pytest.approx(a2b["l1"]["value"])


def test_eval_cli_offline_reports_pixel_metrics_and_says_what_was_skipped(paired_run, capsys):
    run, _ = paired_run
    assert main(["eval", "--run", str(run), "--device", "cpu", "--direction", "B2A", "--kid-subsets", "5"]) == 0
    report = json.loads((run / "eval" / "0000003.json").read_text())
    assert list(report["results"]) == ["B2A"]
    assert set(report["skipped"]) == {"kid", "mean_kid", "fid", "lpips"}
    assert all("could not be downloaded" in why for why in report["skipped"].values())
    assert "--inception-weights PATH" in report["skipped"]["fid"]
    assert set(report["results"]["B2A"]) == {"n_source", "n_target", "n_pairs", "l1", "psnr", "ssim"}
    out = capsys.readouterr().out
    assert METRICS["ssim"].label in out and "Skipped:" in out and "- kid: " in out


def test_eval_cli_uses_local_weights_files_for_the_real_networks(tmp_path):
    """Offline use of the real torchmetrics networks: random weights saved in the reference layouts."""
    data = make_dataset(tmp_path / "data", n_train=1, n_test=2)
    write_pairs(data, sorted(p.name for p in (data / "testA").iterdir()))
    run = make_run(tmp_path / "run", data)
    torch.manual_seed(0)
    import torchvision

    inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    torch.save(inception.state_dict(), tmp_path / "inception.pth")
    args = ["eval", "--run", str(run), "--device", "cpu", "--direction", "A2B", "--metrics", "fid,kid,lpips",
            "--kid-subsets", "3", "--inception-weights", str(tmp_path / "inception.pth"),
            "--lpips-weights", str(save_random_alexnet_features(tmp_path / "alexnet.pth"))]
    assert main(args) == 0
    report = json.loads((run / "eval" / "0000003.json").read_text())
    assert report["skipped"] == {}
    scores = report["results"]["A2B"]
    assert set(scores) == {"n_source", "n_target", "n_pairs", "fid", "kid", "lpips"}
    assert all(np.isfinite(scores[k]["value"]) for k in ("fid", "kid", "lpips"))
    assert scores["fid"]["value"] > 0  # 2048 random-network features of different images differ
    assert report["settings"]["inception_weights"] == str(tmp_path / "inception.pth")


def test_paired_metrics_are_skipped_without_pairs_csv(paired_run, tmp_path):
    run, data = paired_run
    (data / "pairs.csv").unlink()
    report, _ = evaluate_run(run, settings=EvalSettings(kid=FAST_KID, device="cpu", inception=TINY,
                                                        inception_weights=save_tiny(tmp_path / "tiny.pt"),
                                                        metrics=["kid", "l1", "lpips"]))
    assert set(report["skipped"]) == {"l1", "lpips"} and "pairs.csv" in report["skipped"]["l1"]
    assert report["results"]["A2B"]["n_pairs"] == 0 and "kid" in report["results"]["A2B"]


def test_feature_metrics_are_skipped_with_a_single_test_image(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=1, n_test=1)
    run = make_run(tmp_path / "run", data)
    report, _ = evaluate_run(run, settings=EvalSettings(device="cpu", inception=TINY, metrics=["fid", "psnr"],
                                                        inception_weights=save_tiny(tmp_path / "tiny.pt")))
    assert report["skipped"] == {"fid": "KID and FID need at least 2 test images per domain (found 1)",
                                 "psnr": "the data folder has no pairs.csv (paired metrics need ground-truth targets)"}
    assert report["results"]["A2B"] == {"n_source": 1, "n_target": 1, "n_pairs": 0}


@pytest.mark.parametrize("content, message", [
    ("x,y\ntestA/a.png,testB/a.png\n", "header with columns a,b"),
    ("a,b\n", "lists no pairs"),
    ("a,b\ntestA/{first},testB/missing.png\n", "line 2: b = 'testB/missing.png' is not an image"),
    ("a,b\ntestB/{first},testB/{first}\n", "line 2: a = 'testB/"),
])
def test_bad_pairs_csv_is_a_user_error(paired_run, content, message):
    _, data = paired_run
    first = min(p.name for p in (data / "testA").iterdir())
    (data / "pairs.csv").write_text(content.format(first=first))
    with pytest.raises(UserError, match=message):
        load_test_set(data, 32)


def test_eval_user_errors(paired_run, tmp_path, capsys):
    run, data = paired_run
    assert main(["eval", "--run", str(run), "--metrics", "kid,bogus"]) == 2
    assert "unknown metric(s) bogus" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--run", str(empty), "--data", str(data)]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    shutil.rmtree(data)
    assert main(["eval", "--run", str(run), "--device", "cpu"]) == 2
    assert "give --data DIR" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_text("not weights")
    with pytest.raises(UserError, match="--inception-weights .* not a PyTorch weights file"):
        evaluate_run(run, data=make_dataset(tmp_path / "d2", 1, 2),
                     settings=EvalSettings(device="cpu", inception_weights=bad))


def test_evaluate_generators_for_the_training_loop(paired_run, tmp_path):
    _, data = paired_run
    test = load_test_set(data, 32)
    arch = UGATITArch(light=True, img_size=32, ch=4, n_res=1, n_dis=4)
    gen_a2b, gen_b2a = build_generator(arch).train(), build_generator(arch).eval()
    extractor = m.FeatureExtractor(m.open_pretrained(TINY, save_tiny(tmp_path / "tiny.pt")))
    scores = evaluate_generators(gen_a2b, gen_b2a, test.a.images, test.b.images, extractor, pairs=test.pairs,
                                 kid=FAST_KID)
    expected = {f"{d}/{name}" for d in ("A2B", "B2A") for name in ("kid", "kid_std", "mean_kid", "mean_kid_std",
                                                                   "fid", "l1", "psnr", "ssim")}
    assert set(scores) == expected  # no LPIPS network given: every other metric
    assert all(np.isfinite(v) for v in scores.values())
    assert gen_a2b.training and not gen_b2a.training  # modes restored
    again = evaluate_generators(gen_a2b, gen_b2a, test.a.images, test.b.images, extractor, ["fid"])
    assert again == {"A2B/fid": scores["A2B/fid"], "B2A/fid": scores["B2A/fid"]}
    with pytest.raises(ValueError, match="lpips"):
        evaluate_generators(gen_a2b, gen_b2a, test.a.images, test.b.images, extractor, ["lpips"], pairs=test.pairs)


# ----------------------------------------------------------------------------- plot

TAGS = ["loss/D_ad_loss_GA", "loss/D_ad_cam_loss_LB", "loss/G_ad_loss_GA", "loss/G_recon_loss_A",
        "loss/G_cam_loss_B", "loss/Discriminator_loss", "loss/G_loss_A", "loss/style_loss", "lr",
        "rho/genA2B_adailn", "speed/it_per_s", "eval/A2B/kid", "eval/B2A/kid", "eval/A2B/fid", "custom"]


def write_logs(run, steps, offset=0.0):
    writer = SummaryWriter(str(run / "logs"))
    for step in steps:
        for i, tag in enumerate(TAGS):
            writer.add_scalar(tag, i + step * 0.1 + offset, step)
    writer.close()


def test_plot_writes_one_png_per_group(tmp_path, capsys):
    run = tmp_path / "run"
    write_logs(run, range(1, 6))
    assert main(["plot", "--run", str(run)]) == 0
    names = {p.name for p in (run / "plots").iterdir()}
    assert names == {"d_adversarial.png", "g_adversarial.png", "g_cycle_identity_cam.png", "d_totals.png",
                     "g_totals.png",
                     "other_losses.png", "lr.png", "rho.png", "speed.png", "eval_kid.png", "eval_fid.png",
                     "other.png"}
    with Image.open(run / "plots" / "g_totals.png") as image:
        assert image.format == "PNG" and image.width > 300
    assert str(run / "plots" / "lr.png") in capsys.readouterr().out
    lr_only = tmp_path / "lr_only"
    writer = SummaryWriter(str(lr_only / "logs"))
    writer.add_scalar("lr", 1e-4, 1)
    writer.close()
    assert plot_run(lr_only, tmp_path / "raw", smooth=0.0) == [tmp_path / "raw" / "lr.png"]


def test_group_tags_puts_every_tag_in_exactly_one_figure():
    groups = group_tags(TAGS)
    assert sorted(t for tags in groups.values() for t in tags) == sorted(TAGS)
    assert groups[("d_adversarial", "Discriminator adversarial losses")] == ["loss/D_ad_cam_loss_LB",
                                                                             "loss/D_ad_loss_GA"]
    assert [tags for (stem, _), tags in groups.items() if stem.endswith("totals")] == [["loss/Discriminator_loss"],
                                                                                       ["loss/G_loss_A"]]
    assert groups[("eval_kid", "Evaluation: kid")] == ["eval/A2B/kid", "eval/B2A/kid"]


def test_resumed_logs_keep_the_later_values(tmp_path):
    run = tmp_path / "run"
    write_logs(run, range(1, 6))
    write_logs(run, range(4, 8), offset=100.0)  # resumed from step 3: steps 4-5 logged again
    steps, values = read_scalars(run / "logs")["lr"]
    np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5, 6, 7])
    assert values[2] == pytest.approx(8 + 0.3) and values[3] == pytest.approx(108 + 0.4)


def test_smoothing_is_tensorboards_debiased_ema():
    np.testing.assert_array_equal(smooth_curve(np.array([1.0, 5.0, 2.0]), 0.0), [1.0, 5.0, 2.0])
    np.testing.assert_allclose(smooth_curve(np.array([3.0, 3.0, 3.0]), 0.9), [3.0, 3.0, 3.0])
    # w = 0.5: 0.5*1 / 0.5 = 1; (0.25 + 1.5) / 0.75 = 7/3; a NaN is carried over
    np.testing.assert_allclose(smooth_curve(np.array([1.0, 3.0, np.nan]), 0.5), [1.0, 7 / 3, 7 / 3])


def test_plot_without_logs_is_a_user_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["plot", "--run", str(tmp_path / "run")]) == 2
    assert "no TensorBoard logs" in capsys.readouterr().err
    write_logs(tmp_path / "run", [1])
    assert main(["plot", "--run", str(tmp_path / "run"), "--smooth", "1.5"]) == 2
    assert "--smooth must be in [0, 1)" in capsys.readouterr().err
