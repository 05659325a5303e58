"""``--memory lean`` (training/memory.py): the same numbers as ``normal``, in less memory.

Equality is checked bit for bit: lean mode keeps the autograd graph of the normal mode and only
recomputes saved tensors with the same kernels on the same inputs, so on a CPU nothing may differ
(neither in ``--faithful`` nor in the default speed mode). Memory and time are measured by
``benchmarks/train_memory.py``, not here.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_scalars
from unpaired import options as opt
from unpaired.errors import UserError
from unpaired.inference.backends import TorchBackend
from unpaired.inference.translator import capped_batch
from unpaired.models.registry import family
from unpaired.models.ugatit.networks import NET_NAMES, build_ugatit, build_generator
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions
from unpaired.models.ugatit.train import UGATITTrainer
from unpaired.models.ugatit.translate import ImageAndHeatmap, TwoDomainTranslator
from unpaired.models.stargan_v2.data import StarGANv2Batch
from unpaired.training import memory
from unpaired.training.loop import Training
from unpaired.training.speed import accelerate, resolve_speed

CPU = torch.device("cpu")
FIXTURES = sorted((Path(__file__).parent / "parity_fixtures").glob("*.pt"))

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny models of every family that trains, with the options the test builds them from.
FAMILIES = {
    "ugatit-light": ("ugatit", {"light": True, "img_size": 64, "ch": 4, "n_res": 2, "batch_size": 2}),
    "ugatit-full": ("ugatit", {"light": False, "img_size": 64, "ch": 4, "n_res": 1}),
    "photo2cartoon": ("photo2cartoon", {"img_size": 64, "ch": 8, "n_res": 2}),
    "ugatit_tf": ("ugatit_tf", {"light": True, "img_size": 64, "ch": 4, "n_res": 2}),
    "ugatit_tf-wgan-gp": ("ugatit_tf", {"light": True, "img_size": 64, "ch": 4, "n_res": 1, "gan_type": "wgan-gp"}),
    "stargan_v2": ("stargan_v2", {"img_size": 32, "max_conv_dim": 16, "domains": ["a", "b"], "batch_size": 2}),
}


def random_batch(model: str, opts, generator: torch.Generator) -> tuple:
    size, n = opts.arch.img_size, opts.batch_size

    def images():
        return torch.rand(n, 3, size, size, generator=generator) * 2 - 1

    if model != "stargan_v2":
        return images(), images()
    labels = [torch.randint(0, opts.arch.num_domains, (n,), generator=generator) for _ in range(2)]
    latents = [torch.randn(n, opts.arch.latent_dim, generator=generator) for _ in range(2)]
    return (StarGANv2Batch(images(), labels[0], images(), images(), labels[1], *latents),)


def train(model: str, values: dict, iters: int = 3):
    """``iters`` steps of ``model`` through its recipe, as ``unpaired train`` builds it: the losses,
    every gradient each optimiser stepped with, and the final state of every network."""
    fam = family(model)
    recipe = fam.recipe()
    opts, _ = recipe.prepare(opt.build(fam.options, ("test", {"data": "unused", **values})))
    run_opts = recipe.resolve_speed(opts, CPU)
    torch.manual_seed(0)
    nets = {name: net.train() for name, net in recipe.build_nets(opts).items()}
    recipe.accelerate(nets, run_opts, CPU)
    trainer = recipe.make_trainer(nets, run_opts, nets)
    grads = record_gradients(trainer)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for step in range(1, iters + 1):
        trainer.begin_step(step)
        losses.append({k: v.item() for k, v in trainer.step(*random_batch(model, opts, generator)).losses.items()})
    return losses, grads, states(nets)


def optimizers(trainer) -> list[torch.optim.Optimizer]:
    return list(trainer.optims.values()) if hasattr(trainer, "optims") else [trainer.D_optim, trainer.G_optim]


def record_gradients(trainer) -> list[torch.Tensor]:
    """A list that fills with a copy of every gradient each optimiser steps with (lean mode frees them after)."""
    grads: list[torch.Tensor] = []

    def copy_grads(optim, args, kwargs):
        grads.extend(p.grad.clone() for group in optim.param_groups for p in group["params"] if p.grad is not None)

    for optim in optimizers(trainer):
        optim.register_step_pre_hook(copy_grads)
    return grads


def states(nets: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}


def assert_same_states(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


@pytest.mark.parametrize("faithful", [False, True], ids=["default", "faithful"])
@pytest.mark.parametrize("case", FAMILIES)
def test_lean_trains_exactly_like_normal(case, faithful):
    """Three iterations of every family: losses, gradients, weights and buffers (spectral-norm
    u, v included) equal bit for bit. StarGAN v2 and the TF family's wgan-gp check recomputation
    under a double backward (R1, the gradient penalty)."""
    model, values = FAMILIES[case]
    normal = train(model, {**values, "faithful": faithful, "memory": "normal"})
    lean = train(model, {**values, "faithful": faithful, "memory": "lean"})
    assert lean[0] == normal[0]
    assert len(lean[1]) == len(normal[1]) > 0
    assert all(torch.equal(a, b) for a, b in zip(lean[1], normal[1]))
    assert_same_states(lean[2], normal[2])


@pytest.mark.parametrize("faithful", [False, True], ids=["default", "faithful"])
@pytest.mark.parametrize("case", ["ugatit-full", "ugatit_tf-full"])
def test_linears_in_weight_layout_train_exactly_like_normal(case, faithful, monkeypatch):
    """Every linear layer (not only the large ones) with its weight gradient in the weight's
    layout: the same losses, gradients and weights as normal, bit for bit, at batch 1."""
    model, values = {**FAMILIES, "ugatit_tf-full": ("ugatit_tf", {"light": False, "img_size": 64, "ch": 4,
                                                                   "n_res": 1})}[case]
    normal = train(model, {**values, "faithful": faithful, "memory": "normal"})
    monkeypatch.setattr(memory, "LARGE_LINEAR", 1)
    lean = train(model, {**values, "faithful": faithful, "memory": "lean"})
    assert lean[0] == normal[0]
    assert all(torch.equal(a, b) for a, b in zip(lean[1], normal[1]))
    assert_same_states(lean[2], normal[2])


def test_a_linear_used_three_times_sums_its_weight_gradient_in_place():
    """Peak resident memory of a backward pass through a 256 MiB weight used three times: the
    gradient and one use's beside it (2 weights' worth), not the sum so far, a use's and their
    sum (3), which is what autograd does with F.linear's transposed weight gradients."""
    layer = torch.nn.Linear(1 << 20, 64, bias=False)
    assert layer.weight.numel() >= memory.LARGE_LINEAR
    inputs = [torch.randn(1, 1 << 20) for _ in range(3)]
    size = layer.weight.numel() * 4

    def backward_peak() -> float:
        """Weights' worth of memory the backward pass added at its peak (VmHWM after a reset)."""
        layer.weight.grad = None
        loss = sum(layer(x).square().sum() for x in inputs)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = resident_kib("VmRSS")
        loss.backward()
        return (resident_kib("VmHWM") - before) * 1024 / size

    plain = backward_peak()
    expected = layer.weight.grad.clone()
    assert memory.accumulate_large_linears(torch.nn.Sequential(layer)) == 1
    lean = backward_peak()
    assert torch.equal(layer.weight.grad, expected)
    assert plain > 2.7 and 1.7 < lean < 2.3, (plain, lean)


def resident_kib(field: str) -> int:
    """VmRSS or VmHWM (the peak since the last reset through /proc/self/clear_refs) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


# ----------------------------------------------------------------------------- the official fixtures


def fixture_options(meta: dict, memory_mode: str) -> UGATITOptions:
    h = meta["hyper"]
    arch = UGATITArch(light=meta["light"], img_size=meta["img_size"], ch=meta["ch"], n_res=meta["n_res"], n_dis=6)
    opts = UGATITOptions(arch=arch, lr=h["lr"], weight_decay=h["weight_decay"], adv_weight=h["adv_weight"],
                         cycle_weight=h["cycle_weight"], identity_weight=h["identity_weight"],
                         cam_weight=h["cam_weight"], iters=h["iteration"], decay_flag=h["decay_flag"],
                         faithful=True, memory=memory_mode)
    return resolve_speed(opts, CPU)


def fixture_run(fx: dict, memory_mode: str) -> list[dict]:
    """The fixture's two batch-1 iterations from its initial state, with what parity checks at each."""
    opts = fixture_options(fx["meta"], memory_mode)
    nets = build_ugatit(opts.arch)
    for name, net in nets.items():
        net.load_state_dict(fx["init"][name])
        net.train()
    trainer = UGATITTrainer(accelerate(nets, opts, CPU), opts)
    grads = record_gradients(trainer)
    out = []
    for i in (1, 2):
        trainer.begin_step(i)
        real_a, real_b = fx["inputs"]["real_A"][i - 1:i], fx["inputs"]["real_B"][i - 1:i]
        tensors = trainer.make_fakes(real_a, real_b)
        d_losses, d_out = trainer.discriminator_step(tensors)
        after_d = states({name: nets[name] for name in NET_NAMES[2:]})
        g_losses = trainer.generator_step(tensors)
        out.append({"losses": {k: v.item() for k, v in {**d_losses, **g_losses}.items()},
                    "tensors": {k: v.detach().clone() for k, v in {**d_out, **tensors}.items()},
                    "after_d": after_d, "state": states(nets), "grads": list(grads)})
        grads.clear()
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_faithful_lean_is_bit_identical_on_the_parity_fixtures(path):
    """``--faithful --memory lean`` against ``--faithful``: every loss term, D- and G-step tensor,
    gradient, SN buffer after the D step and state, bit for bit; and against the official
    fixture at its tolerances (tests/test_parity.py checks the faithful mode in full)."""
    fx = torch.load(path, weights_only=True)
    normal, lean = fixture_run(fx, "normal"), fixture_run(fx, "lean")
    for i, (a, b) in enumerate(zip(normal, lean), start=1):
        assert b["losses"] == a["losses"], f"iteration {i}"
        assert all(torch.equal(b["tensors"][k], a["tensors"][k]) for k in a["tensors"]), f"iteration {i}"
        assert len(b["grads"]) == len(a["grads"]) and all(map(torch.equal, b["grads"], a["grads"]))
        assert_same_states(b["after_d"], a["after_d"])
        assert_same_states(b["state"], a["state"])
        ref = fx["train_b1"][f"iter{i}"]
        tol = 1e-5 if i == 1 else 1e-3
        for name, value in ref["losses"].items():
            assert abs(b["losses"][name] - value) <= tol * abs(value) + 1e-12, f"iteration {i} {name}"
        for name, buffers in ref["sn_buffers_after_D_step"].items():
            for key, value in buffers.items():
                assert (b["after_d"][name][key] - value).abs().max() <= tol * value.abs().max(), f"{name}.{key}"


# ----------------------------------------------------------------------------- the mechanism


@pytest.mark.parametrize("sn_outputs", [False, True])
def test_recomputed_discriminator_uses_the_spectral_norm_of_its_own_call(sn_outputs):
    """A discriminator judges two batches (two power iterations) before one backward: when the first
    call is recomputed its layers hold the second call's σ; lean mode must reinstate the first's."""
    torch.manual_seed(0)
    normal = build_ugatit(UGATITArch(light=True, img_size=64, ch=4, n_res=1, n_dis=4))["disGA"]
    lean = copy.deepcopy(normal)
    base = UGATITOptions(sn_outputs=sn_outputs, fused_adam=False, precision="fp32", benchmark_flag=False)
    accelerate({"d": normal}, base, CPU)
    accelerate({"d": lean}, dataclasses.replace(base, memory="lean"), CPU)
    generator = torch.Generator().manual_seed(2)
    real, fake = (torch.randn(2, 3, 64, 64, generator=generator) for _ in range(2))
    for net in (normal, lean):
        loss = sum(out.square().mean() for image in (real, fake) for out in net(image)[:2])
        loss.backward()
    for (name, a), b in zip(normal.named_parameters(), lean.parameters()):
        assert torch.equal(a.grad, b.grad), name
    assert_same_states({"d": lean.state_dict()}, {"d": normal.state_dict()})


def live_heap_bytes() -> int:
    """Bytes malloc has handed out and not got back (glibc): what the tensors on the CPU hold."""
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


def held_by_graph(memory_mode: str) -> int:
    """Bytes a generator's training-mode forward leaves held for its backward pass."""
    torch.manual_seed(0)
    net = build_generator(UGATITArch(light=True, img_size=128, ch=16, n_res=2)).train()
    opts = UGATITOptions(memory=memory_mode, sn_outputs=True, fused_adam=False, precision="fp32", benchmark_flag=False)
    accelerate({"g": net}, opts, CPU)
    x = torch.rand(1, 3, 128, 128)
    before = live_heap_bytes()
    image, cam_logit, _ = net(x)
    held = live_heap_bytes() - before
    (image.mean() + cam_logit.mean()).backward()
    return held


def test_lean_generator_holds_a_fraction_of_the_activations():
    """Observed: 4.8 MB of 25 MB (128 px, ch 16); most of what is left is the kept convolution outputs."""
    try:
        live_heap_bytes()
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2")
    normal, lean = held_by_graph("normal"), held_by_graph("lean")
    assert lean < 0.3 * normal, (lean, normal)


def test_blocks_run_as_before_without_autograd():
    torch.manual_seed(0)
    net = build_generator(UGATITArch(light=True, img_size=32, ch=4, n_res=1)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        assert memory.checkpoint_network(net) == 1 + 1 + 1  # encoder, one bottleneck block, decoder
        after = net(x)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


# ----------------------------------------------------------------------------- the option


def test_memory_option_is_checked_and_resumable():
    assert opt.build(UGATITOptions, ("cli", {"memory": "lean"})).memory == "lean"
    with pytest.raises(UserError, match="--memory must be one of normal, lean"):
        opt.build(UGATITOptions, ("cli", {"memory": "tiny"}))
    changed, notes = opt.changed(UGATITOptions(), {"memory": "lean"})
    assert changed.memory == "lean" and notes == ["memory: 'normal' -> 'lean'"]


def run_losses(out: Path) -> list[float]:
    return [v for _, v in sorted(read_scalars(out, "loss/Generator_loss").items())]


def test_lean_run_resumes_exactly_and_matches_a_normal_run(tiny_data, tmp_path, caplog):
    """A lean run killed after 2 of 4 iterations and resumed gives the uninterrupted run's losses,
    and so does a run that switches from normal to lean at the resume (memory is resumable)."""
    # decay_flag off: the learning rate then does not depend on the run length, so a 2-iteration
    # run is the first half of a 4-iteration one
    values = {"data": str(tiny_data), "light": True, "img_size": 32, "ch": 4, "n_res": 1, "device": "cpu",
              "num_workers": 0, "n_samples": 2, "log_freq": 1, "save_freq": 2, "print_freq": 4, "decay_flag": False}

    def fresh(out: Path, iters: int, memory_mode: str) -> None:
        Training(opt.build(UGATITOptions, ("test", {**values, "out": str(out), "iters": iters,
                                                    "memory": memory_mode}))).run()

    fresh(tmp_path / "straight", 4, "lean")
    fresh(tmp_path / "resumed", 2, "lean")
    Training.resume(tmp_path / "resumed", {"iters": 4}).run()
    fresh(tmp_path / "switched", 2, "normal")
    with caplog.at_level(logging.INFO, logger="unpaired"):
        Training.resume(tmp_path / "switched", {"iters": 4, "memory": "lean"}).run()
    assert "memory=lean" in caplog.text and "memory: 'normal' -> 'lean'" in caplog.text
    straight = run_losses(tmp_path / "straight")
    assert len(straight) == 4
    assert run_losses(tmp_path / "resumed") == straight
    assert run_losses(tmp_path / "switched") == straight


# ----------------------------------------------------------------------------- inference


def test_batches_are_capped_by_model_pixels():
    assert [capped_batch(8, size) for size in (256, 362, 363, 512, 1024, 2048)] == [8, 8, 7, 4, 1, 1]
    assert capped_batch(8, 1024, max_pixels=None) == 8
    assert capped_batch(3, 64) == 3
    with pytest.raises(ValueError, match="at least 1"):
        capped_batch(0, 256)


def test_translator_runs_capped_batches_with_the_same_pictures():
    """Five pictures asked for in one batch of 8 run as 2 + 2 + 1 under a budget of two 32-px
    inputs, and come out as they do uncapped (per-picture results do not depend on the batch)."""
    torch.manual_seed(0)
    arch = UGATITArch(light=True, img_size=32, ch=4, n_res=1)
    module = ImageAndHeatmap(build_generator(arch).eval())
    translator = TwoDomainTranslator(TorchBackend(module, "cpu", half=False), model="ugatit", arch=arch,
                                     direction="A2B", source=Path("random"))
    ran: list[int] = []
    module.register_forward_pre_hook(lambda _, inputs: ran.append(len(inputs[0])))
    pictures = [torch.rand(3, 40, 48) * 2 - 1 for _ in range(5)]
    translator.max_batch_pixels = None
    uncapped = translator(pictures, batch_size=8)
    translator.max_batch_pixels = 2 * 32 * 32
    assert translator.batch_for(8) == 2
    capped = translator(pictures, batch_size=8)
    assert ran == [5, 2, 2, 1]
    assert [t.source for t in capped] == list(range(5))
    for a, b in zip(uncapped, capped):  # uint8 pictures: at most one level apart (batch-size rounding)
        assert np.abs(np.asarray(a.image, dtype=np.int16) - np.asarray(b.image, dtype=np.int16)).max() <= 1
