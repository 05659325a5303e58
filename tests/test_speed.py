"""Speed options (training/speed.py): they change how a run computes, not what it learns."""

from __future__ import annotations

import copy
import shutil
import statistics
from dataclasses import replace

import pytest
import torch
from torch.nn.utils import spectral_norm
from torch.nn.utils.spectral_norm import SpectralNorm

from unpaired.data.streams import DomainStream
from unpaired.data.two_domain import demo_dataset_path
from unpaired.errors import UserError
from unpaired.models.ugatit.data import open_dataset
from unpaired.models.ugatit.networks import Discriminator, build_ugatit
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions, resolve_n_dis
from unpaired.models.ugatit.train import UGATITTrainer
from unpaired.training.speed import FAITHFUL, accelerate, resolve_speed, rework_spectral_norm

CPU = torch.device("cpu")
ITERS = 50


def losses_of(result) -> dict[str, float]:
    return {k: v.item() for k, v in result.losses.items()}


def loss_curve(opts: UGATITOptions, seed: int = 0) -> list[dict[str, float]]:
    """Per-step losses of ITERS iterations on the demo data at 32 px, from weights seeded by ``seed``."""
    data = open_dataset(demo_dataset_path(), opts.arch.img_size)
    batches = zip(DomainStream(data.train_a, 1, seed, 0), DomainStream(data.train_b, 1, seed, 1))
    torch.manual_seed(seed)
    opts = resolve_speed(opts, CPU)
    trainer = UGATITTrainer(accelerate(build_ugatit(opts.arch), opts, CPU), opts)
    return [losses_of(trainer.step(a, b)) for (a, b), _ in zip(batches, range(ITERS))]


def window_mean(curve: list[dict[str, float]], key: str, start: int, stop: int) -> float:
    return statistics.fmean(step[key] for step in curve[start:stop])


FAST_MODES = {  # name: (options on top of the defaults, tolerance of the D windows, of the G windows)
    "cpu_default": ({}, 0.005, 0.005),
    "gpu_numerics": ({"precision": "bf16"}, 0.02, 0.03),
}


@pytest.mark.parametrize("mode", FAST_MODES)
def test_fast_mode_trains_like_the_faithful_mode(one_thread, mode):
    """The fast modes' loss curves follow the faithful fp32 run's over 50 iterations.

    ``cpu_default`` is what ``unpaired train`` does on a CPU (fp32, spectral norm dividing
    outputs, fused Adam); ``gpu_numerics`` adds the GPU default's bf16 autocast (compiling
    only reorders fp32 arithmetic; see the compile test below). Both runs start from one seed
    and see the same batches; means of windows of 10 steps are compared. Observed on a 2-core
    EPYC over seeds 0-2 (32 px, ch 4): cpu_default within 0.04 % of faithful in every window,
    gpu_numerics within 0.32 % (D) and 0.92 % (G). The tolerances still catch real changes:
    half the learning rate moves the D windows by 1.4-21 % (every window after the first by
    more than 6.8 %), a CAM weight of 500 moves every G window by 49 %.
    """
    options, d_tol, g_tol = FAST_MODES[mode]
    base, _ = resolve_n_dis(UGATITOptions(arch=UGATITArch(light=True, img_size=32, ch=4, n_res=1), iters=ITERS))
    faithful = loss_curve(replace(base, faithful=True))
    fast = loss_curve(replace(base, **options))
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in fast)
    for start in (0, 20, 40):
        for key, tol in (("Discriminator_loss", d_tol), ("Generator_loss", g_tol)):
            ref, got = (window_mean(curve, key, start, start + 10) for curve in (faithful, fast))
            assert abs(got - ref) <= tol * abs(ref), f"{key}, steps {start}-{start + 10}: {got} vs {ref}"


def train_discriminator(net: torch.nn.Module, steps: int = 2) -> None:
    """The trainer's D-step pattern: real then fake forward (two power iterations), one backward."""
    generator = torch.Generator().manual_seed(3)
    optim = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        real, fake = (torch.randn(2, 3, 32, 32, generator=generator) for _ in range(2))
        optim.zero_grad()
        loss = sum(out.square().mean() for image in (real, fake) for out in torch.atleast_1d(net(image))[:2])
        loss.backward()
        optim.step()


def assert_states_match(got: torch.nn.Module, want: torch.nn.Module, exact: bool) -> None:
    assert list(got.state_dict()) == list(want.state_dict())  # checkpoint keys unchanged
    for (name, a), b in zip(want.state_dict().items(), got.state_dict().values()):
        if exact:
            assert torch.equal(b, a), name
        else:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.skipif(not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
@pytest.mark.parametrize("divide_outputs", [False, True])
def test_compiled_spectral_norm_advances_as_in_eager_mode(one_thread, divide_outputs):
    """Under torch.compile (inductor) the SN buffers advance as in eager mode.

    Without the hoisting of the power iterations, this very pattern fails in the backward with
    "modified by an inplace operation" (inductor saves the mutated u buffer for the backward).
    One SN conv keeps the compile time low; the real discriminator is checked in eager mode below.
    """
    torch.manual_seed(0)
    eager = torch.nn.Sequential(spectral_norm(torch.nn.Conv2d(3, 4, 4, 2)), torch.nn.LeakyReLU(0.2))
    compiled = copy.deepcopy(eager)
    u0 = eager[0].weight_u.clone()
    options = {**FAITHFUL, "compile": "default", "sn_outputs": divide_outputs}
    accelerate({"net": compiled}, resolve_speed(replace(UGATITOptions(), **options), CPU), CPU)
    train_discriminator(eager)
    train_discriminator(compiled)
    assert not torch.equal(eager[0].weight_u, u0), "the power iteration did not run"
    assert_states_match(compiled, eager, exact=False)


@pytest.mark.parametrize("divide_outputs", [False, True])
def test_reworked_spectral_norm_trains_as_torch_does(divide_outputs):
    """Hoisted power iterations are bit-identical to torch's hooks; dividing outputs by σ
    instead of weights gives the same u, v, weights and outputs up to rounding."""
    torch.manual_seed(0)
    plain = Discriminator(3, ch=2, n_layers=4)
    reworked = copy.deepcopy(plain)
    assert rework_spectral_norm(reworked, divide_outputs) == 6  # 3 body convs, gap_fc, gmp_fc, logit conv
    assert not any(isinstance(h, SpectralNorm) for m in reworked.modules() for h in m._forward_pre_hooks.values())
    # with divided outputs the convs never form W / σ; the CAM head's linear layers still do
    assert hasattr(reworked.conv, "weight") != divide_outputs and hasattr(reworked.gap_fc, "weight")
    train_discriminator(plain)
    train_discriminator(reworked)
    assert_states_match(reworked, plain, exact=not divide_outputs)
    image = torch.randn(1, 3, 32, 32)
    for train in (True, False):  # eval mode reads u, v without advancing them
        plain.train(train), reworked.train(train)
        for want, got in zip(plain(image), reworked(image)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert_states_match(reworked, plain, exact=not divide_outputs)


def test_resolve_speed_per_device(monkeypatch):
    opts = UGATITOptions()
    names = ("precision", "compile", "channels_last", "fused_adam", "sn_outputs", "benchmark_flag")
    on_cpu = resolve_speed(opts, CPU)
    assert tuple(getattr(on_cpu, name) for name in names) == ("fp32", "off", False, True, True, False)
    cuda = torch.device("cuda")
    for bf16, precision in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
        on_gpu = resolve_speed(opts, cuda)
        assert tuple(getattr(on_gpu, name) for name in names) == (precision, "off", False, True, True, True)
    assert resolve_speed(replace(opts, deterministic=True), cuda).benchmark_flag is False
    assert resolve_speed(replace(opts, compile="max-autotune"), cuda).compile == "max-autotune"  # explicit wins
    assert resolve_speed(replace(opts, sn_outputs=False), CPU).sn_outputs is False
    faithful = resolve_speed(replace(opts, faithful=True), cuda)
    assert {name: getattr(faithful, name) for name in FAITHFUL} == FAITHFUL and faithful.benchmark_flag is False
    assert resolve_speed(replace(opts, faithful=True, benchmark_flag=True), cuda).benchmark_flag is True


def test_faithful_refuses_contradicting_options():
    with pytest.raises(UserError, match="--precision bf16, --sn-outputs$"):
        resolve_speed(UGATITOptions(faithful=True, precision="bf16", sn_outputs=True), CPU)
    resolve_speed(UGATITOptions(faithful=True, precision="fp32"), CPU)  # agreeing is fine


def test_accelerate_needs_resolved_options():
    nets = build_ugatit(UGATITArch(light=True, img_size=32, ch=2, n_res=1, n_dis=4))
    with pytest.raises(ValueError, match="resolve_speed"):
        accelerate(nets, UGATITOptions(), CPU)


def test_unresolved_config_trains_faithfully():
    """A trainer built from plain options (as the parity tests do) uses fp32 and the default Adam."""
    opts = UGATITOptions(arch=UGATITArch(light=True, img_size=32, ch=2, n_res=1, n_dis=4))
    trainer = UGATITTrainer(build_ugatit(opts.arch), opts)
    assert trainer._autocast_dtype is None and not trainer.scaler.is_enabled()
    assert not trainer.G_optim.defaults["fused"] and not trainer.D_optim.defaults["fused"]


def how_it_computes(training) -> tuple[bool, bool]:
    """(torch's spectral-norm hooks on the networks, fused Adam) of a Training."""
    hooks = [h for net in training.nets.values() for m in net.modules() for h in m._forward_pre_hooks.values()]
    fused = [bool(optim.defaults["fused"]) for optim in (training.trainer.G_optim, training.trainer.D_optim)]
    assert len(set(fused)) == 1
    return any(isinstance(h, SpectralNorm) for h in hooks), fused[0]


def test_training_applies_the_resolved_mode_and_resume_chooses_again(tiny_data, tmp_path):
    """`unpaired train` runs the fast default unless --faithful; config.yaml keeps the options as
    given, so a resume may switch modes (speed options never change what a run learns)."""
    from unpaired.options import build
    from unpaired.training.loop import Training

    options = dict(data=str(tiny_data), out=str(tmp_path / "run"), light=True, img_size=32, ch=4, n_res=1,
                   device="cpu", num_workers=0, n_samples=2, iters=2, save_freq=2, print_freq=2, log_freq=1)
    fast = Training(build(UGATITOptions, ("test", options)))
    assert how_it_computes(fast) == (False, True)
    assert all(not hasattr(conv, "weight") for conv in (fast.nets["disGA"].conv, fast.nets["disLB"].conv))
    fast.run()
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "precision: auto" in saved and "faithful: false" in saved and "fused_adam: null" in saved
    resumed = Training.resume(options["out"], {"faithful": True, "iters": 3})
    assert how_it_computes(resumed) == (True, False) and resumed.start_step == 2
    resumed.run()
    assert "faithful: true" in (tmp_path / "run" / "config.yaml").read_text()
