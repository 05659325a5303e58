"""Parity with the official U-GAT-IT TensorFlow code, against fixtures it produced.

Every folder under ``$UNPAIRED_TF_PARITY_DIR`` (default: tests/parity_fixtures/tf) that holds a
``fixture.npz`` is checked: its TF checkpoint read by our reader (against the recorded
checksums), the architecture inferred from it (against the recorded config), the initial-state
outputs of all four networks with intermediate taps and spectral-norm sigmas, and one training
iteration on the fixture's batch (every loss term, the D- and G-step tensors, ``u`` after each
step, every variable and Adam's first moment after the step). Tolerances are the fixture README's.
"""

from __future__ import annotations

import copy
import json
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from unpaired.models.ugatit_tf.bundle import TFCheckpoint
from unpaired.models.ugatit_tf.networks import DISCRIMINATOR_NAMES, NET_NAMES, build_ugatit_tf, power_iteration
from unpaired.models.ugatit_tf.official import (TF_SCOPES, is_optimizer_slot, read_tf_checkpoint,
                                                tf_variables_from, to_tf_layout, variable_map)
from unpaired.models.ugatit_tf.train import ADAM_BETAS, UGATITTFTrainer

SHIPPED = Path(__file__).parent / "parity_fixtures" / "tf"
# Tolerances (fixture README). Outputs, losses, u: |ours - TF| <= ATOL + RTOL * max|TF| over the
# tensor: the README's error "scaled by max(1, |x|)" is per tensor (an exact float64 evaluation of
# our networks is within 5e-6 of TF's float32 arrays that way, but up to 2.6e-5 off element by
# element, beyond an elementwise 1e-5 + 1e-4 |x|).
RTOL, ATOL = 1e-4, 1e-5
# Gradients: relative to each tensor's largest entry, plus float32 rounding noise of sums whose
# terms reach the network's largest gradient (TF's gradients of conv biases before instance norms,
# zero in exact arithmetic, reach 1e-6 of it).
GRAD_RTOL, GRAD_NOISE = 1e-4, 2e-6
# After the step, in units of lr: where the gradient is resolved (|g| above 1e-5 and the noise)
# each parameter moved by lr * sign(g) on both sides; elsewhere by at most lr each.
MOVED_TOL, ELSEWHERE_TOL, RESOLVED_GRAD = 0.02, 2.0 + 1e-3, 1e-5
L2_SCALE = 1e-4  # ops.weight_regularizer = l2_regularizer(0.0001)


def fixture_dirs() -> list[Path]:
    root = Path(os.environ.get("UNPAIRED_TF_PARITY_DIR") or SHIPPED)
    dirs = sorted(p for p in root.iterdir() if (p / "fixture.npz").is_file()) if root.is_dir() else []
    if not dirs:
        raise RuntimeError(f"{root} holds no TF parity fixture folder (a folder with fixture.npz)")
    return dirs


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_close(actual, expected: np.ndarray, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    actual = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    tolerance = atol + rtol * np.abs(expected).max(initial=0)
    error = np.abs(actual.astype(np.float64) - expected)
    worst = int(np.argmax(error)) if error.size else 0
    assert error.size == 0 or error.flat[worst] <= tolerance, (
        f"{what}: {actual.flat[worst]!r} vs {expected.flat[worst]!r} (tolerance {tolerance:.3g})")


def nhwc(tensor: torch.Tensor) -> torch.Tensor:
    """Our NCHW map in the fixtures' layout: NHWC, and heatmaps [B, 1, h, w] squeezed like TF's."""
    return tensor.permute(0, 2, 3, 1) if tensor.dim() == 4 else tensor


def heatmap(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.squeeze()


class Case:
    """One fixture folder: its arrays, meta data, and the networks read from its checkpoint."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.z = np.load(folder / "fixture.npz")
        self.meta = json.loads((folder / "meta.json").read_text())
        config = self.meta["config"]
        # Not recorded in a checkpoint: a light model's image size, and smoothing.
        self.arch, self.states = read_tf_checkpoint(folder / "checkpoint", img_size=config["img_size"],
                                                    smoothing=self.meta["official_args"]["smoothing"])
        self.inputs = {x: torch.from_numpy(self.z[f"input/real_{x}"]).permute(0, 3, 1, 2) for x in "AB"}

    def nets(self) -> dict[str, torch.nn.Module]:
        nets = build_ugatit_tf(self.arch)
        for name, net in nets.items():
            net.load_state_dict(copy.deepcopy(self.states[name]), strict=True)
        return nets

    def options(self) -> types.SimpleNamespace:
        a = self.meta["official_args"]
        return types.SimpleNamespace(
            lr=a["lr"], weight_decay=L2_SCALE, adv_weight=a["adv_weight"], cycle_weight=a["cycle_weight"],
            identity_weight=a["identity_weight"], cam_weight=a["cam_weight"], gan_type=a["gan_type"],
            gp_weight=a["GP_ld"], n_critic=a["n_critic"], iters=a["epoch"] * a["iteration"],
            epoch_iters=a["iteration"], decay_flag=a["decay_flag"], decay_epoch=a["decay_epoch"],
            fused_adam=False, precision="fp32", memory="normal")


@pytest.fixture(scope="module", params=fixture_dirs(), ids=lambda p: p.name)
def case(request) -> Case:
    return Case(request.param)


@pytest.fixture(scope="module")
def trained(case):
    """One TF iteration on the fixture's batch (shared by the D and the G step, as it was made)."""
    nets = case.nets()
    trainer = UGATITTFTrainer(nets, case.options())
    trainer.begin_step(1)
    real_A, real_B = case.inputs["A"], case.inputs["B"]
    fakes = trainer.translate(real_A, real_B, grad=True)
    d_losses, d_tensors = trainer.discriminator_step(real_A, real_B, fakes)
    mid = {name: copy.deepcopy(nets[name].state_dict()) for name in DISCRIMINATOR_NAMES}
    g_losses, g_tensors = trainer.generator_step(real_A, real_B, fakes)
    return types.SimpleNamespace(nets=nets, trainer=trainer, d_losses=d_losses, d_tensors=d_tensors, mid=mid,
                                 g_losses=g_losses, g_tensors=g_tensors)


def sigma_of(instance: str, states: dict, arch) -> torch.Tensor:
    """sigma of a fixture SN instance (``discriminator_A_1/local/CAM_logit_1``...) from ``states``:
    ``_1`` marks TF's second call of a scope (fakes) or of the CAM linear (GMP); same variables."""
    scope, branch, layer = instance.split("/")
    prefix = f"{scope.removesuffix('_1')}/{branch}/{layer.removesuffix('_1') if layer.startswith('CAM') else layer}"
    mapping = variable_map(arch)
    net, kernel_key = mapping[f"{prefix}/kernel"]
    _, u_key = mapping[f"{prefix}/u"]
    return power_iteration(states[net][kernel_key].flatten(1), states[net][u_key])[0]


# ----------------------------------------------------------------------------- checkpoint and arch


def test_reader_matches_the_recorded_checksums(case):
    checkpoint = TFCheckpoint(case.folder / "checkpoint")
    recorded = case.meta["init_checksums"]
    assert set(recorded) == {n for n in checkpoint.entries if not is_optimizer_slot(n)}
    for name, check in recorded.items():
        value = checkpoint.read(name)
        assert list(value.shape) == check["shape"], name
        assert value.ravel()[:4].tolist() == check["first"], name
        assert np.isclose(value.sum(dtype=np.float64), check["sum"], rtol=1e-9, atol=1e-9), name
        assert np.isclose(np.square(value, dtype=np.float64).sum(), check["sumsq"], rtol=1e-9, atol=1e-12), name


def test_inferred_architecture_is_the_recorded_config(case):
    config = case.meta["config"]
    arch = case.arch
    assert (arch.light, arch.img_size, arch.ch, arch.n_res, arch.n_dis) == (
        config["light"], config["img_size"], config["ch"], config["n_res"], config["n_dis"])
    assert arch.img_ch == case.meta["official_args"]["img_ch"] and set(case.states) == set(NET_NAMES)


# ----------------------------------------------------------------------------- initial state


def test_initial_generator_outputs_and_taps(case):
    nets, z = case.nets(), case.z
    with torch.no_grad():
        for name, tag, x in (("genA2B", "a2b", case.inputs["A"]), ("genB2A", "b2a", case.inputs["B"])):
            image, cam_logit, heat = nets[name](x)
            assert_close(nhwc(image), z[f"test/{tag}/image"], f"{tag} image")
            assert_close(cam_logit, z[f"test/{tag}/cam_logit"], f"{tag} cam_logit")
            assert_close(heatmap(heat), z[f"test/{tag}/heatmap"], f"{tag} heatmap")
        gen = nets["genA2B"]
        taps = {"encoder": gen.encode(case.inputs["A"])}
        taps["cam_features"], _, _ = gen.attend(taps["encoder"])
        taps["gamma"], taps["beta"] = gen.mlp(taps["cam_features"])
        taps["bottleneck"] = gen.bottleneck(taps["cam_features"], taps["gamma"], taps["beta"])
        taps["pre_logit"] = gen.upsample(taps["bottleneck"])
    for key, value in taps.items():
        assert_close(nhwc(value), z[f"test/a2b/taps/{key}"], f"a2b tap {key}")


def test_initial_discriminator_outputs_and_sigmas(case):
    nets, z = case.nets(), case.z
    with torch.no_grad():
        for domain in "AB":
            out = nets[f"dis{domain}"](case.inputs[domain])
            for i, branch in enumerate(("local", "global")):
                prefix = f"test/D_{domain}/{branch}"
                assert_close(nhwc(out.logits[i]), z[f"{prefix}_logit"], f"{prefix}_logit")
                assert_close(out.cam_logits[i], z[f"{prefix}_cam_logit"], f"{prefix}_cam_logit")
                assert_close(heatmap(out.heatmaps[i]), z[f"{prefix}_heatmap"], f"{prefix}_heatmap")
        sigmas = [k for k in z.files if k.startswith("test/sn_sigma/")]
        assert sigmas
        for key in sigmas:
            assert_close(sigma_of(key.removeprefix("test/sn_sigma/"), case.states, case.arch), z[key], key)


# ----------------------------------------------------------------------------- one training iteration


def test_iteration_losses(case, trained):
    for step, losses in (("D_step", trained.d_losses), ("G_step", trained.g_losses)):
        expected = case.meta["loss_names"][step]
        assert set(expected) <= set(losses), f"{step}: missing {sorted(set(expected) - set(losses))}"
        for name in expected:
            assert_close(losses[name], case.z[f"train/{step}/loss/{name}"], f"{step} {name}")


def test_iteration_tensors(case, trained):
    for step, tensors in (("D_step", trained.d_tensors), ("G_step", trained.g_tensors)):
        keys = [k for k in case.z.files if k.startswith(f"train/{step}/") and "/loss/" not in k
                and "/sn_" not in k]
        assert keys
        for key in keys:
            assert_close(nhwc(tensors[key.removeprefix(f"train/{step}/")]), case.z[key], key)


def test_iteration_spectral_norm_order(case, trained):
    """D step: the real and the fake call both start from the stored u (same sigma, same u');
    G step: the fake call starts from the D step's u, with the updated kernels."""
    z, arch = case.z, case.arch
    final = {name: trained.nets[name].state_dict() for name in DISCRIMINATOR_NAMES}
    for step, before, after in (("D_step", case.states, trained.mid), ("G_step", trained.mid, final)):
        for key in [k for k in z.files if k.startswith(f"train/{step}/sn_sigma/")]:
            instance = key.removeprefix(f"train/{step}/sn_sigma/")
            assert_close(sigma_of(instance, before, arch), z[key], key)
            scope, branch, layer = instance.split("/")
            layer = layer.removesuffix("_1") if layer.startswith("CAM") else layer
            u_name = f"{scope.removesuffix('_1')}/{branch}/{layer}/u"
            net, u_key = variable_map(arch)[u_name]
            assert_close(after[net][u_key], z[f"train/{step}/sn_u_hat/{instance}"], f"{step} u' of {instance}")
    mid_tf = tf_variables_from(arch, trained.mid)
    for key in [k for k in z.files if k.startswith("train/u_after_D_step/")]:
        name = key.removeprefix("train/u_after_D_step/")
        assert_close(mid_tf[name], z[key], key)


def test_iteration_parameters_gradients_and_adam(case, trained):
    z, arch, lr = case.z, case.arch, case.meta["official_args"]["lr"]
    assert trained.trainer.lr == pytest.approx(float(z["train/lr"]), rel=1e-7)
    after = tf_variables_from(arch, {n: trained.nets[n].state_dict() for n in NET_NAMES})
    assert set(after) == {k.removeprefix("after/") for k in z.files if k.startswith("after/")}
    optim = {n: trained.trainer.G_optim if n.startswith("gen") else trained.trainer.D_optim for n in NET_NAMES}
    largest = {scope: max(np.abs(z[k]).max() for k in z.files if k.startswith(f"after_adam_m/{scope}/"))
               / (1 - ADAM_BETAS[0]) for scope in TF_SCOPES.values()}  # each network's largest gradient
    for name, (net, key) in variable_map(arch).items():
        if name.endswith("/u"):
            assert_close(after[name], z[f"after/{name}"], f"after {name}")
            continue
        param = dict(trained.nets[net].named_parameters())[key]
        ours = to_tf_layout(name, optim[net].state[param]["exp_avg"]) / (1 - ADAM_BETAS[0])
        ref = z[f"after_adam_m/{name}"] / (1 - ADAM_BETAS[0])
        noise = GRAD_NOISE * largest[TF_SCOPES[net]]
        assert_close(ours, ref, f"gradient {name}", rtol=GRAD_RTOL, atol=noise)
        moved = np.abs(after[name] - z[f"after/{name}"]) / lr
        resolved = np.abs(ref) > max(RESOLVED_GRAD, noise)
        assert moved[resolved].max(initial=0) <= MOVED_TOL, f"after {name}: {moved[resolved].max():.3g} lr off"
        assert moved[~resolved].max(initial=0) <= ELSEWHERE_TOL, f"after {name}: {moved.max():.3g} lr off"
    for optimizer, suffix in ((trained.trainer.G_optim, ""), (trained.trainer.D_optim, "_1")):
        steps = {int(s["step"]) for s in optimizer.state.values()}
        assert steps == {1}
        for i, beta in enumerate(ADAM_BETAS, start=1):  # TF's accumulators start at beta, then multiply
            assert_close(np.float32(beta ** 2), z[f"after_adam_power/beta{i}_power{suffix}"], f"beta{i}_power{suffix}")
