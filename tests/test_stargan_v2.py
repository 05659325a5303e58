"""Tests for StarGAN v2: networks, losses, EMA, λ_ds schedule, trainer, grids, multi-domain data."""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torchvision import transforms as T

from unpaired import checkpoint as ckpt
from unpaired import load_translator
from unpaired.data.two_domain import demo_dataset_path
from unpaired.errors import UserError
from unpaired.inference.translator import TranslationOutput
from unpaired.models.stargan_v2 import train as sg
from unpaired.models.stargan_v2.data import (
    StarGANv2Batch,
    StarGANv2Stream,
    StarGANv2TrainTransform,
    TrainingSamples,
    crop_box,
    open_multidomain,
    val_batch,
)
from unpaired.models.stargan_v2.fan import FAN, face_masks, load_fan
from unpaired.models.stargan_v2.networks import (
    NET_NAMES,
    Generator,
    HighPass,
    StyleEncoder,
    build_stargan_v2,
    ema_nets,
)
from unpaired.models.stargan_v2.options import StarGANv2Arch, StarGANv2Options, validate
from unpaired.models.stargan_v2.train import (
    StarGANv2Trainer,
    adv_loss,
    compute_d_loss,
    compute_g_loss,
    ds_weight,
    latent_grid,
    moving_average,
    r1_reg,
    reference_grid,
)
from unpaired.models.stargan_v2.translate import arch_from_meta
from unpaired.options import build
from unpaired.viz import to_uint8_image

S, STYLE, LATENT, MAX_DIM = 32, 8, 4, 16
DOMAINS = ("a", "b", "c")
TINY = dict(img_size=S, style_dim=STYLE, latent_dim=LATENT, max_conv_dim=MAX_DIM)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_arch(**changes) -> StarGANv2Arch:
    return StarGANv2Arch(**{**TINY, "domains": DOMAINS, **changes})


def tiny_opts(**changes) -> StarGANv2Options:
    """Tiny options built as flags and config files are (flat names, every value checked on entry)."""
    values = {**TINY, "domains": list(DOMAINS), "data": "data", "batch_size": 2, "device": "cpu", **changes}
    return build(StarGANv2Options, ("the test", values))


def floats(result) -> dict[str, float]:
    return {name: value.item() for name, value in result.losses.items()}


def random_batch(seed: int = 0, b: int = 2) -> StarGANv2Batch:
    g = torch.Generator().manual_seed(seed)

    def image():
        return torch.rand(b, 3, S, S, generator=g) * 2 - 1

    return StarGANv2Batch(image(), torch.randint(3, (b,), generator=g), image(), image(),
                          torch.randint(3, (b,), generator=g), torch.randn(b, LATENT, generator=g),
                          torch.randn(b, LATENT, generator=g))


def make_multidomain(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """Three domains of real images cut from the embedded emoji demo set."""
    demo = demo_dataset_path()
    sources = {"a": ("trainA", "testA", 0), "b": ("trainA", "testA", n_train), "c": ("trainB", "testB", 0)}
    for domain, (train_src, val_src, offset) in sources.items():
        for split, src, count in (("train", train_src, n_train), ("val", val_src, n_val)):
            (root / split / domain).mkdir(parents=True)
            for path in sorted((demo / src).iterdir())[offset:offset + count]:
                shutil.copy(path, root / split / domain / path.name)
    return root


# ----------------------------------------------------------------------------- networks


def test_network_shapes_and_domain_heads():
    nets = build_stargan_v2(tiny_arch())
    assert tuple(nets) == NET_NAMES
    x, y = torch.rand(2, 3, S, S) * 2 - 1, torch.tensor([0, 2])
    s = nets["mapping_network"](torch.randn(2, LATENT), y)
    assert s.shape == (2, STYLE)
    assert nets["style_encoder"](x, y).shape == (2, STYLE)
    assert nets["discriminator"](x, y).shape == (2,)
    assert nets["generator"](x, s).shape == (2, 3, S, S)
    assert len(nets["generator"].encode) == 1 + 2  # log2(32) - 4 = 1 down block, 2 bottleneck blocks
    # each sample gets its own domain's head
    for net in (nets["style_encoder"], nets["discriminator"]):
        per_domain = [net(x, torch.full((2,), d)) for d in range(3)]
        torch.testing.assert_close(net(x, y), torch.stack([per_domain[0][0], per_domain[2][1]]), rtol=0, atol=0)


def test_official_layout_at_256():
    """Channel widths and block counts of the official 256 px networks (built on the meta device)."""
    with torch.device("meta"):
        g = Generator(256, 64, 512, w_hpf=0)
        g_hpf = Generator(256, 64, 512, w_hpf=1)
        e = StyleEncoder(256, 64, 2, 512)
    assert g.from_rgb.out_channels == 64
    assert [b.conv2.out_channels for b in g.encode] == [128, 256, 512, 512, 512, 512]
    assert [b.conv2.out_channels for b in g.decode] == [512, 512, 512, 256, 128, 64]
    assert len(g_hpf.encode) == 7 and g_hpf.skip_sizes == (32, 64, 128)
    assert not any("conv1x1" in k for k in g_hpf.decode.state_dict())  # no dead shortcuts with masks
    assert "hpf.filter" not in g_hpf.state_dict()
    assert e.shared[-2].kernel_size == (4, 4) and e.unshared[0].in_features == 512
    assert len([m for m in e.shared if m.__class__.__name__ == "ResBlk"]) == 6


def test_he_init_and_seed_determinism():
    torch.manual_seed(123)
    a = build_stargan_v2(tiny_arch(), seed=5)
    torch.manual_seed(456)  # the global RNG must not matter
    b = build_stargan_v2(tiny_arch(), seed=5)
    c = build_stargan_v2(tiny_arch(), seed=6)
    for name in NET_NAMES:
        for (key, t), t2 in zip(a[name].state_dict().items(), b[name].state_dict().values()):
            assert torch.equal(t, t2), f"{name}.{key}"
    assert not torch.equal(a["generator"].from_rgb.weight, c["generator"].from_rgb.weight)
    for base in ("generator", "mapping_network", "style_encoder"):
        for t, t2 in zip(a[base].state_dict().values(), a[base + "_ema"].state_dict().values()):
            assert torch.equal(t, t2)  # EMA starts as a copy of the initialised net
    conv = a["discriminator"].main[0]
    fan_in = conv.weight[0].numel()
    assert torch.all(conv.bias == 0)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.25)  # Kaiming, ReLU gain


def test_high_pass_filter():
    hpf = HighPass(2.0)
    assert torch.equal(hpf(torch.full((1, 2, 5, 5), 3.0))[..., 1:-1, 1:-1], torch.zeros(1, 2, 3, 3))
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    out = hpf(impulse)[0, 0]
    assert out[2, 2].item() == 4.0 and out[1, 1].item() == -0.5 and out[0, 0].item() == 0.0


def test_generator_face_mask_skips():
    g = build_stargan_v2(tiny_arch(img_size=128, max_conv_dim=8, w_hpf=1.0))["generator"]
    x, s = torch.rand(1, 3, 128, 128) * 2 - 1, torch.randn(1, STYLE)
    masks = (torch.rand(1, 1, 256, 256), torch.rand(1, 1, 256, 256))
    with_masks, without = g(x, s, masks=masks), g(x, s)
    assert with_masks.shape == without.shape == (1, 3, 128, 128)
    assert not torch.allclose(with_masks, without)
    zero = (torch.zeros(1, 1, 256, 256),) * 2
    torch.testing.assert_close(g(x, s, masks=zero), without)  # masks gate the skips
    with pytest.raises(ValueError):
        build_stargan_v2(tiny_arch())["generator"](torch.zeros(1, 3, S, S), torch.zeros(1, STYLE), masks=zero)


def test_fan_shapes_masks_and_weight_loading(tmp_path):
    fan = FAN().eval()
    with torch.no_grad():
        assert fan(torch.rand(1, 3, 64, 64)).shape == (1, 99, 16, 16)
    heat = torch.zeros(1, 98, 256, 256)
    heat[0, 62, 100, 90] = 1.0  # an eye landmark: moved to 8 and 24 rows lower
    heat[0, 10, 200, 128] = 1.0  # a chin landmark: in the whole-face mask, not the inner one
    heat[0, 0, 50, 50] = 1.0  # face outline: dropped
    face, inner = face_masks(heat)
    assert face.shape == inner.shape == (1, 1, 256, 256)
    on = face[0, 0] > 0.99
    assert on.sum() == 3 and on[108, 90] and on[124, 90] and on[200, 128]
    assert inner[0, 0, 124, 90] > 0.99 and inner[0, 0, 200, 128] == 0

    path = tmp_path / "wing.ckpt"
    torch.save({"state_dict": {f"module.{k}": v + 1 for k, v in fan.state_dict().items()}}, path)
    loaded = load_fan(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(loaded.l0.weight, fan.l0.weight + 1)
    torch.save({"state_dict": {"l0.weight": fan.l0.weight}}, path)
    with pytest.raises(UserError, match="missing"):
        load_fan(path)
    with pytest.raises(UserError, match="not found"):
        load_fan(tmp_path / "nope.ckpt")


# ----------------------------------------------------------------------------- losses


def test_adv_loss_matches_bce_formula():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0])
    expected_real = torch.mean(-torch.log(torch.sigmoid(logits)))
    expected_fake = torch.mean(-torch.log(1 - torch.sigmoid(logits)))
    torch.testing.assert_close(adv_loss(logits, 1.0), expected_real)
    torch.testing.assert_close(adv_loss(logits, 0.0), expected_fake)


def test_r1_penalty_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, 4, generator=g).requires_grad_()
    x = torch.randn(5, 3, 4, 4, generator=g).requires_grad_()
    linear = (w * x).flatten(1).sum(1)  # dD/dx = w for every sample
    torch.testing.assert_close(r1_reg(linear, x), 0.5 * (w.detach() ** 2).sum())
    quadratic = (w * x**2).flatten(1).sum(1)  # dD/dx_b = 2 w x_b
    reg = r1_reg(quadratic, x)
    xd, wd = x.detach(), w.detach()
    torch.testing.assert_close(reg, 0.5 * ((2 * wd * xd) ** 2).flatten(1).sum(1).mean())
    reg.backward()  # the penalty is differentiable in D's weights (double backward)
    torch.testing.assert_close(w.grad, (4 * wd * xd**2).mean(0))


class _StubG(nn.Module):
    def forward(self, x, s, masks=None):
        return x * 0.5 + s[:, :3, None, None]


class _StubF(nn.Module):
    def forward(self, z, y):
        return z * (y + 1)[:, None].float()


class _StubE(nn.Module):
    def forward(self, x, y):
        return x.mean((2, 3)) + y[:, None].float()


class _StubD(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y):
        return (x * self.w).flatten(1).sum(1) + 0.1 * y.float()


def _stub_nets():
    g = torch.Generator().manual_seed(1)
    return {"generator": _StubG(), "mapping_network": _StubF(), "style_encoder": _StubE(),
            "discriminator": _StubD(0.1 * torch.randn(3, 2, 2, generator=g))}


def _stub_inputs():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 2, 2, generator=g) * 2 - 1
    return x, torch.tensor([0, 1]), torch.tensor([2, 0]), torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)


def test_d_loss_terms_by_hand():
    nets = _stub_nets()
    x, y_org, y_trg, z, _ = _stub_inputs()
    w = nets["discriminator"].w.detach()

    def d(img, y):
        return (img * w).flatten(1).sum(1) + 0.1 * y.float()

    x_fake = x * 0.5 + (z * (y_trg + 1)[:, None])[:, :3, None, None]
    real, fake, reg = F.softplus(-d(x, y_org)).mean(), F.softplus(d(x_fake, y_trg)).mean(), 0.5 * (w**2).sum()
    loss, terms = compute_d_loss(nets, x, y_org, y_trg, z_trg=z, lambda_reg=3.0)
    torch.testing.assert_close(terms["real"], real)
    torch.testing.assert_close(terms["fake"], fake)
    torch.testing.assert_close(terms["reg"], reg)
    torch.testing.assert_close(loss, real + fake + 3.0 * reg)
    assert not x.requires_grad  # the caller's batch is left alone


def test_g_loss_terms_by_hand():
    nets = _stub_nets()
    x, y_org, y_trg, z1, z2 = _stub_inputs()
    z2.requires_grad_()
    w = nets["discriminator"].w.detach()

    def gen(img, s):
        return img * 0.5 + s[:, :3, None, None]

    s1, s2 = z1 * (y_trg + 1)[:, None], z2.detach() * (y_trg + 1)[:, None]
    fake, fake2 = gen(x, s1), gen(x, s2)
    adv = F.softplus(-((fake * w).flatten(1).sum(1) + 0.1 * y_trg)).mean()
    sty = (fake.mean((2, 3)) + y_trg[:, None] - s1).abs().mean()
    ds = (fake - fake2).abs().mean()
    cyc = (gen(fake, x.mean((2, 3)) + y_org[:, None]) - x).abs().mean()
    loss, terms = compute_g_loss(nets, x, y_org, y_trg, z_trgs=(z1, z2), lambda_sty=2.0, lambda_ds=0.5, lambda_cyc=4.0)
    for name, value in (("adv", adv), ("sty", sty), ("ds", ds), ("cyc", cyc)):
        torch.testing.assert_close(terms[name], value, msg=name)
    torch.testing.assert_close(loss, adv + 2.0 * sty - 0.5 * ds + 4.0 * cyc)
    assert torch.autograd.grad(loss, z2, allow_unused=True)[0] is None  # the second image is a constant
    with pytest.raises(ValueError):
        compute_g_loss(nets, x, y_org, y_trg)


def test_moving_average_is_exact():
    torch.manual_seed(0)
    net, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    moving_average(net, ema, beta=0.9)
    for p, e, b in zip(net.parameters(), ema.parameters(), before):
        assert torch.equal(e, torch.lerp(p.detach(), b, 0.9))
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p.detach())


def test_ds_weight_schedule():
    assert [ds_weight(step, 2.0, 4) for step in (1, 2, 3, 4, 5, 6, 100)] == [2.0, 1.5, 1.0, 0.5, 0.0, 0.0, 0.0]
    trainer = StarGANv2Trainer(build_stargan_v2(tiny_arch()), tiny_opts(lambda_ds=2.0, ds_iter=4))
    assert trainer.lambda_ds == 2.0
    trainer.begin_step(3)
    assert trainer.lambda_ds == 1.0 and trainer.lr == 1e-4


# ----------------------------------------------------------------------------- config


def test_presets_and_validation():
    assert build(StarGANv2Options, ("flags", {"preset": "afhq"})).lambda_ds == 2.0
    celeba = build(StarGANv2Options, ("flags", {"preset": "celeba_hq", "data": "data"}))
    assert (celeba.lambda_ds, celeba.arch.w_hpf) == (1.0, 1.0)
    assert build(StarGANv2Options, ("base", {"preset": "afhq"}),
                 ("flags", {"lambda_ds": 3.0, "iters": None})).lambda_ds == 3.0
    for bad in ({"preset": "ffhq"}, {"bogus": 1}):
        with pytest.raises(UserError):
            build(StarGANv2Options, ("flags", bad))
    with pytest.raises(UserError, match="fan-weights"):
        validate(celeba)
    with pytest.raises(UserError, match="--data"):
        validate(build(StarGANv2Options, ("flags", {"preset": "celeba_hq"})))
    # each refused on entry (a single value out of range) or by validate (values that do not fit together)
    for bad in ({"img_size": 48}, {"img_size": 16}, {"lambda_ds": -1.0}, {"beta2": 1.5}, {"domains": ["a"]},
                {"w_hpf": 1.0, "fan_weights": "wing.ckpt", "img_size": 64}):
        with pytest.raises(UserError):
            validate(tiny_opts(**bad))
    validate(tiny_opts())
    with pytest.raises(UserError, match="w-hpf"):
        StarGANv2Trainer(build_stargan_v2(tiny_arch(img_size=128, max_conv_dim=8, w_hpf=1.0)),
                         tiny_opts(img_size=128, max_conv_dim=8, w_hpf=1.0))
    arch = tiny_opts().arch
    assert arch == tiny_arch()
    assert arch_from_meta({**dataclasses.asdict(arch), "domains": list(DOMAINS), "extra": 1}) == arch
    with pytest.raises(UserError, match="names no domains"):
        arch_from_meta({**dataclasses.asdict(arch), "domains": []})


def test_afhq_preset_sets_lambda_ds_unless_it_is_given():
    """--preset afhq means lambda_ds 2 (the paper's AFHQ command); an explicit --lambda-ds wins, even
    one equal to the default, whichever layer (config file or command line) gives it."""

    def lambda_ds(*layers):
        return build(StarGANv2Options, *layers).lambda_ds

    assert StarGANv2Options().lambda_ds == 1.0
    assert lambda_ds(("the command line", {"preset": "afhq"})) == 2.0
    assert lambda_ds(("the command line", {"preset": "afhq", "lambda_ds": None})) == 2.0  # flag not given
    assert lambda_ds(("the command line", {"preset": "afhq", "lambda_ds": 0.5})) == 0.5
    assert lambda_ds(("the command line", {"preset": "afhq", "lambda_ds": 1.0})) == 1.0
    assert lambda_ds(("config file c.yaml", {"preset": "afhq"}), ("the command line", {"lambda_ds": 3.0})) == 3.0
    assert lambda_ds(("config file c.yaml", {"lambda_ds": 3.0}), ("the command line", {"preset": "afhq"})) == 3.0
    assert lambda_ds(("the command line", {"lambda_ds": 0.5})) == 0.5  # no preset: the value given
    afhq = build(StarGANv2Options, ("the command line", {"preset": "afhq", "lambda_ds": 0.5}))
    assert (afhq.preset, afhq.lambda_reg, afhq.lambda_sty, afhq.lambda_cyc, afhq.arch.w_hpf) == (
        "afhq", 1.0, 1.0, 1.0, 0.0)  # the rest of the preset still applies


# ----------------------------------------------------------------------------- training


def _snapshot(nets):
    return {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}


def test_training_steps_change_params_update_ema_and_resume_exactly(tmp_path):
    data = open_multidomain(make_multidomain(tmp_path / "data"), S)
    batches = list(zip(range(3), StarGANv2Stream(data, batch_size=2, latent_dim=LATENT, seed=0)))
    cfg = tiny_opts(ds_iter=10)
    nets = build_stargan_v2(cfg.arch, seed=0)
    trainer = StarGANv2Trainer(nets, cfg)
    start = _snapshot(nets)
    for step, batch in ((i + 1, b) for i, b in batches[:2]):
        trainer.begin_step(step)
        before = _snapshot(nets)
        result = trainer.step(batch)
        assert all(math.isfinite(v) for v in floats(result).values())
        for name in ("generator", "mapping_network", "style_encoder"):  # EMA = lerp(new param, old ema, β)
            for p, e, old in zip(nets[name].parameters(), nets[name + "_ema"].parameters(), before[name + "_ema"]):
                assert torch.equal(e, torch.lerp(p.detach(), old, cfg.ema_beta))
    assert set(result.losses) == {f"D/{b}_{t}" for b in ("latent", "ref") for t in ("real", "fake", "reg")} | {
        f"G/{b}_{t}" for b in ("latent", "ref") for t in ("adv", "sty", "ds", "cyc")} | {"G/lambda_ds"}
    assert floats(result)["G/lambda_ds"] == pytest.approx(0.9)
    after = _snapshot(nets)
    for name in NET_NAMES:
        assert any(not torch.equal(a, b) for a, b in zip(start[name], after[name])), f"{name} did not change"

    saved_nets = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    saved_state = copy.deepcopy(trainer.state_dict())  # the live dict holds the optimiser tensors
    trainer.begin_step(3)
    expected = floats(trainer.step(batches[2][1]))

    resumed_nets = build_stargan_v2(cfg.arch, seed=99)
    for name, net in resumed_nets.items():
        net.load_state_dict(saved_nets[name])
    resumed = StarGANv2Trainer(resumed_nets, cfg)
    resumed.load_state_dict(saved_state)
    resumed.begin_step(3)
    assert floats(resumed.step(batches[2][1])) == expected


def test_same_seed_same_step():
    results = []
    for _ in range(2):
        trainer = StarGANv2Trainer(build_stargan_v2(tiny_arch(), seed=4), tiny_opts())
        results.append(floats(trainer.step(random_batch(seed=7))))
    assert results[0] == results[1]


class _CountingFAN:
    """Stands in for the FAN: fixed masks, counts the images it was asked about."""

    def __init__(self):
        self.calls = 0

    def masks(self, x):
        self.calls += 1
        return torch.ones(x.size(0), 1, 256, 256), torch.zeros(x.size(0), 1, 256, 256)


def test_face_masks_feed_every_generator_pass():
    size = 128
    cfg = tiny_opts(img_size=size, max_conv_dim=8, w_hpf=1.0, fan_weights="unused")
    fan = _CountingFAN()
    trainer = StarGANv2Trainer(build_stargan_v2(cfg.arch), cfg, fan=fan)
    b = random_batch()
    big = StarGANv2Batch(*(F.interpolate(t, size=size) if t.dim() == 4 else t for t in b))
    assert all(math.isfinite(v) for v in floats(trainer.step(big)).values())
    assert fan.calls == 3  # sources once per iteration, then each G branch's fakes for the cycle pass


# ----------------------------------------------------------------------------- sample grids


def test_latent_and_reference_grids(monkeypatch):
    nets = build_stargan_v2(tiny_arch(), seed=0)
    x_src = torch.rand(2, 3, S, S) * 2 - 1
    grid = latent_grid(ema_nets(nets), x_src, 3, torch.randn(2, LATENT))
    assert grid.dtype == np.uint8 and grid.shape == (2 * S, (1 + 3 * 2) * S, 3)
    np.testing.assert_array_equal(grid[S:, :S], to_uint8_image(x_src[1]))

    monkeypatch.setattr(sg, "STYLE_AVERAGE_SAMPLES", 64)
    truncated = latent_grid(ema_nets(nets), x_src, 3, torch.randn(2, LATENT), psi=0.0)
    np.testing.assert_array_equal(truncated[:, S:2 * S], truncated[:, 2 * S:3 * S])  # psi 0: the mean style only
    assert not np.array_equal(truncated[:, S:2 * S], truncated[:, 3 * S:4 * S])  # ...which differs per domain

    x_ref, y_ref = torch.rand(2, 3, S, S) * 2 - 1, torch.tensor([0, 2])
    ref = reference_grid(ema_nets(nets), torch.rand(3, 3, S, S) * 2 - 1, x_ref, y_ref)
    assert ref.shape == ((1 + 2) * S, (1 + 3) * S, 3)
    assert (ref[:S, :S] == 255).all()  # the blank corner tile
    np.testing.assert_array_equal(ref[2 * S:, :S], to_uint8_image(x_ref[1]))


# ----------------------------------------------------------------------------- translator


def test_translator_latent_and_reference_calls(tmp_path):
    """tr(pictures, domain=d, seed=s, num=k): k outputs per picture (style 0..k-1), the same pixels for the
    same seed; tr(pictures, domain=d, reference=img): one per picture. Outputs are the EMA nets' own."""
    nets = build_stargan_v2(tiny_arch(), seed=3)
    with torch.no_grad():  # EMA copies that differ from the trained nets: the translator must use these
        for name in ("generator_ema", "mapping_network_ema", "style_encoder_ema"):
            for param in nets[name].parameters():
                param.mul_(1.25)
    path = tmp_path / "tiny.safetensors"
    ckpt.save_weights(path, ckpt.states_of(nets), "stargan_v2", tiny_arch())
    tr = load_translator(path, device="cpu")
    g = torch.Generator().manual_seed(0)
    pictures = [Image.fromarray(np.asarray(torch.randint(0, 256, (S, S, 3), generator=g, dtype=torch.uint8)))
                for _ in range(2)]

    out = tr(pictures, domain="b", seed=7, num=3)
    assert isinstance(out, TranslationOutput) and len(out) == 2 * 3
    assert [(t.source, t.style) for t in out] == [(i, k) for i in range(2) for k in range(3)]
    assert all(t.heatmap is None for t in out) and out.heatmaps is None
    pixels = [np.asarray(image) for image in out.images]
    assert all(p.shape == (S, S, 3) for p in pixels)
    for i in range(2):
        styles = pixels[3 * i:3 * i + 3]
        assert all(not np.array_equal(styles[j], styles[k]) for j, k in ((0, 1), (0, 2), (1, 2)))
    again = tr(pictures, domain="b", seed=7, num=3)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, again.images))
    other = tr(pictures, domain="b", seed=8, num=3)
    assert not any(np.array_equal(a, np.asarray(b)) for a, b in zip(pixels, other.images))
    # output k of every picture is G_ema(x, F_ema(z_k, d)), z_k the k-th code drawn from the seed
    z = torch.randn(3, LATENT, generator=torch.Generator().manual_seed(7))
    ema = ema_nets(nets)
    x = torch.stack([T.ToTensor()(picture) * 2 - 1 for picture in pictures])
    with torch.no_grad():
        for k in range(3):
            expected = ema["generator"](x, ema["mapping_network"](z[k:k + 1].expand(2, -1), torch.tensor([1, 1])))
            for i in range(2):
                assert np.abs(pixels[3 * i + k].astype(int) - to_uint8_image(expected[i]).astype(int)).max() <= 1

    reference = pictures[1]
    guided = tr(pictures, domain="c", reference=reference)
    assert isinstance(guided, TranslationOutput) and len(guided) == 2
    assert [(t.source, t.style) for t in guided] == [(0, 0), (1, 0)]
    with torch.no_grad():
        style = ema["style_encoder"](x[1:], torch.tensor([2]))
        expected = ema["generator"](x, style.expand(2, -1))
    for i in range(2):
        assert np.abs(np.asarray(guided[i].image).astype(int) - to_uint8_image(expected[i]).astype(int)).max() <= 1
    assert len(tr(pictures[0], domain="a", reference=reference)) == 1
    assert len(tr(pictures[0], domain="a")) == 1  # latent-guided, one output by default

    for extra in ({"seed": 1}, {"num": 2}, {"seed": 1, "num": 2}):
        with pytest.raises(ValueError, match="seed and num"):
            tr(pictures, domain="c", reference=reference, **extra)
    with pytest.raises(UserError, match="unknown domain 'zebra'"):
        tr(pictures, domain="zebra", seed=1)
    text = repr(tr)
    assert text.startswith("StarGANv2Translator(") and "domains=['a', 'b', 'c']" in text
    assert "model='stargan_v2'" in text and f"img_size={S}" in text


# ----------------------------------------------------------------------------- data


def test_crop_box_matches_torchvision():
    for seed in range(40):
        for width, height in ((40, 37), (64, 64), (10, 30)):
            torch.manual_seed(seed)
            image = Image.new("RGB", (width, height))
            expected = T.RandomResizedCrop.get_params(image, scale=[0.8, 1.0], ratio=[0.9, 1.1])
            assert crop_box(width, height, torch.Generator().manual_seed(seed)) == expected


def test_train_transform_is_seeded():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    transform = StarGANv2TrainTransform(16)
    outs = [transform(image, torch.Generator().manual_seed(s)) for s in (1, 1, 2, 3, 4, 5)]
    assert outs[0].shape == (3, 16, 16) and outs[0].min() >= -1 and outs[0].max() <= 1
    assert torch.equal(outs[0], outs[1])
    assert len({o.sum().item() for o in outs[1:]}) > 2


def _solid_domains(root: Path, sizes: dict[str, int]) -> Path:
    """Domain d's images are solid colours with red = 40*(d+1) and green = 10*index."""
    for split in ("train", "val"):
        for d, (name, count) in enumerate(sizes.items()):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 12), (40 * (d + 1), 10 * i, 0)).save(folder / f"{i}.png")
    return root


def test_balanced_sampling_and_reference_pairs(tmp_path):
    data = open_multidomain(_solid_domains(tmp_path / "d", {"x": 1, "y": 2, "z": 6}), 4)
    samples = TrainingSamples(data.train, latent_dim=LATENT, seed=3)
    counts = np.zeros(3, dtype=int)
    for n in range(300):
        s = samples[n]
        counts[s.y_src] += 1
        for x, y in ((s.x_src, s.y_src), (s.x_ref, s.y_ref), (s.x_ref2, s.y_ref)):
            red = round((x[0, 0, 0].item() + 1) * 127.5)
            assert red == 40 * (int(y) + 1)  # the image comes from its label's domain
    assert counts.min() > 70, counts  # each domain ~100 of 300 despite 1 vs 6 images
    assert samples[5].z_trg.shape == (LATENT,) and not torch.equal(samples[5].z_trg, samples[5].z_trg2)


def test_stream_resumes_exactly_and_ignores_workers(tmp_path):
    data = open_multidomain(_solid_domains(tmp_path / "d", {"x": 2, "y": 3}), 8)

    def take(start, count, workers=0):
        stream = StarGANv2Stream(data, batch_size=3, latent_dim=LATENT, seed=1, start_batch=start, num_workers=workers)
        return [b for _, b in zip(range(count), stream)]

    full = take(0, 4)
    assert full[0].x_src.shape == (3, 3, 8, 8) and full[0].y_src.dtype == torch.int64
    for resumed, original in zip(take(2, 2), full[2:]):
        for a, b in zip(resumed, original):
            assert torch.equal(a, b)
    for a, b in zip(take(0, 2, workers=2)[1], full[1]):
        assert torch.equal(a, b)
    assert not torch.equal(full[0].z_trg, full[1].z_trg)


def test_multidomain_folders(tmp_path):
    root = make_multidomain(tmp_path / "data", n_train=2, n_val=1)
    data = open_multidomain(root, S)
    assert data.domains == DOMAINS and [len(d) for d in data.train] == [2, 2, 2]
    x, y = val_batch(data, 4)
    assert x.shape == (4, 3, S, S) and y.tolist() == [0, 1, 2, 0]
    assert torch.equal(x[0], x[3])  # one val image per domain: wraps around

    with pytest.raises(UserError, match="does not exist"):
        open_multidomain(tmp_path / "nowhere", S)
    shutil.rmtree(root / "val" / "c")
    with pytest.raises(UserError, match="same domain"):
        open_multidomain(root, S)
    shutil.rmtree(root / "val")
    with pytest.raises(UserError, match="missing folder"):
        open_multidomain(root, S)
    one = tmp_path / "one"
    (one / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="at least two"):
        open_multidomain(one, S)
    (one / "train" / "b").mkdir()
    (one / "val" / "a").mkdir(parents=True)
    (one / "val" / "b").mkdir()
    with pytest.raises(UserError, match="no images"):
        open_multidomain(one, S)
