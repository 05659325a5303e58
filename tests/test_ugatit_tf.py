"""Unit tests of the TF-faithful U-GAT-IT family: checkpoint reader, mapping, networks, trainer, transforms.

The end-to-end comparison with the official TF code is tests/test_parity_tf.py.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unpaired.errors import UserError
from unpaired.models.ugatit_tf.bundle import TFCheckpoint
from unpaired.models.ugatit_tf import crc32c as crc32c_module
from unpaired.models.ugatit_tf.crc32c import _raw_bytes, crc32c, masked
from unpaired.models.ugatit_tf.data import TFInferenceTransform, TFTrainTransform, tf_resize_bilinear
from unpaired.models.ugatit_tf.networks import (CAM, NET_NAMES, TFConv, build_ugatit_tf, power_iteration,
                                                regularized_kernels, set_sn_outputs)
from unpaired.models.ugatit_tf.official import (expected_tf_shapes, infer_arch, is_optimizer_slot,
                                                read_tf_checkpoint, state_dicts_from_tf, tf_variables_from,
                                                variable_map)
from unpaired.models.ugatit_tf.options import GAN_TYPES, UGATITTFArch, deepest_n_dis
from unpaired.models.ugatit_tf.train import UGATITTFTrainer, discriminator_loss, generator_loss, regularization, tf_lr

FIXTURES = Path(__file__).parent / "parity_fixtures" / "tf"
LIGHT = FIXTURES / "light_s96_ch2_nd6" / "checkpoint"
RELEASED = json.loads((FIXTURES / "released_selfie2anime_variables.json").read_text())
TINY = UGATITTFArch(light=True, img_size=24, ch=2, n_res=1, n_dis=4)
TINY_FULL = UGATITTFArch(light=False, img_size=24, ch=2, n_res=2, n_dis=4)

pytestmark = pytest.mark.usefixtures("one_thread")


def floats(result) -> dict[str, float]:
    """A step's loss terms as plain floats."""
    return {name: value.item() for name, value in result.losses.items()}


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------- a tiny bundle writer


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _entry(dtype: int, shape: tuple[int, ...], offset: int, data: bytes) -> bytes:
    dims = b"".join(_field(2, 2, _varint(len(d)) + d) for d in (_field(1, 0, _varint(n)) for n in shape))
    return (_field(1, 0, _varint(dtype)) + _field(2, 2, _varint(len(dims)) + dims) + _field(4, 0, _varint(offset))
            + _field(5, 0, _varint(len(data))) + _field(6, 5, masked(crc32c(data)).to_bytes(4, "little")))


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart at 0


def write_bundle(prefix: Path, tensors: dict[str, tuple[int, np.ndarray]], big_endian: bool = False) -> None:
    """A minimal one-shard TF checkpoint (uncompressed table, no prefix compression)."""
    data, entries = b"", [(b"", _field(1, 0, _varint(1)) + _field(2, 0, _varint(int(big_endian))))]
    for name in sorted(tensors):
        dtype, array = tensors[name]
        raw = array.astype(array.dtype.newbyteorder(">" if big_endian else "<")).tobytes()
        entries.append((name.encode(), _entry(dtype, array.shape, len(data), raw)))
        data += raw
    blocks, index = b"", []
    for kind, block in (("data", _block(entries)), ("meta", _block([]))):
        handle = _varint(len(blocks)) + _varint(len(block))
        blocks += block + b"\0" + masked(crc32c(block + b"\0")).to_bytes(4, "little")
        index.append((entries[-1][0], handle) if kind == "data" else handle)
    index_block = _block([index[0]])
    index_handle = _varint(len(blocks)) + _varint(len(index_block))
    blocks += index_block + b"\0" + masked(crc32c(index_block + b"\0")).to_bytes(4, "little")
    footer = (index[1] + index_handle).ljust(40, b"\0") + (0xDB4775248B80FB57).to_bytes(8, "little")
    Path(f"{prefix}.index").write_bytes(blocks + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(data)


def copy_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(LIGHT, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    return folder


# ----------------------------------------------------------------------------- CRC-32C and the reader


@pytest.mark.parametrize("size", [0, 1, 9, 4095, 4096, 4097, 70_001, (1 << 20) + 3])
def test_crc32c_matches_the_byte_loop(size, monkeypatch):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    expected = _raw_bytes(0xFFFFFFFF, memoryview(data)) ^ 0xFFFFFFFF
    assert crc32c(data) == expected
    monkeypatch.setattr(crc32c_module, "LOG2_MAX_CHUNK", 13)  # many full-size chunks, as for a 1 GB tensor
    assert crc32c(data) == expected
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value


def test_reader_accepts_folder_prefix_and_index(tmp_path):
    folder = copy_checkpoint(tmp_path)
    prefix = folder / "UGATIT_light.model-0"
    names = TFCheckpoint(folder).shapes()
    assert TFCheckpoint(prefix).shapes() == names == TFCheckpoint(f"{prefix}.index").shapes()
    (folder / "checkpoint").unlink()  # no state file: the folder's only index
    assert TFCheckpoint(folder).prefix == prefix
    assert len(names) == 776 and names["generator_B/conv/conv2d/kernel"] == (7, 7, 3, 2)


def test_reader_follows_the_state_file_and_reports_a_missing_prefix(tmp_path):
    folder = copy_checkpoint(tmp_path)
    (folder / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/UGATIT_light.model-0"\n')
    assert TFCheckpoint(folder).prefix == folder / "UGATIT_light.model-0"  # absolute from another machine
    (folder / "checkpoint").write_text('model_checkpoint_path: "UGATIT_light.model-9"\n')
    assert "UGATIT_light.model-9" in one_line_error(pytest.raises(UserError, TFCheckpoint, folder))


def test_reader_refuses_missing_and_ambiguous_paths(tmp_path):
    assert "no TensorFlow checkpoint" in one_line_error(pytest.raises(UserError, TFCheckpoint, tmp_path / "x"))
    folder = copy_checkpoint(tmp_path)
    (folder / "checkpoint").unlink()
    shutil.copy(folder / "UGATIT_light.model-0.index", folder / "other.index")
    assert "2 *.index files" in one_line_error(pytest.raises(UserError, TFCheckpoint, folder))


def test_reader_refuses_a_truncated_data_file(tmp_path):
    folder = copy_checkpoint(tmp_path)
    data = folder / "UGATIT_light.model-0.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    checkpoint = TFCheckpoint(folder)
    last = max(checkpoint.entries, key=lambda n: checkpoint.entries[n].offset)
    message = one_line_error(pytest.raises(UserError, checkpoint.read, last))
    assert "truncated" in message and data.name in message


def test_reader_refuses_garbled_tensor_bytes(tmp_path):
    folder = copy_checkpoint(tmp_path)
    checkpoint = TFCheckpoint(folder)
    entry = checkpoint.entries["generator_B/conv/conv2d/kernel"]
    data = bytearray(checkpoint.shard_path(0).read_bytes())
    data[entry.offset + 5] ^= 0x40
    checkpoint.shard_path(0).write_bytes(bytes(data))
    message = one_line_error(pytest.raises(UserError, checkpoint.read, "generator_B/conv/conv2d/kernel"))
    assert "CRC-32C" in message and "generator_B/conv/conv2d/kernel" in message
    checkpoint.read("generator_B/conv/conv2d/bias")  # other tensors still read


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic"])
def test_reader_refuses_a_damaged_index(tmp_path, damage):
    folder = copy_checkpoint(tmp_path)
    index = folder / "UGATIT_light.model-0.index"
    raw = bytearray(index.read_bytes())
    if damage == "truncate":
        raw = raw[:len(raw) // 2]
    elif damage == "flip":
        raw[100] ^= 0x01
    else:
        raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    message = one_line_error(pytest.raises(UserError, TFCheckpoint, folder))
    assert index.name in message
    if damage == "flip":
        assert "checksum" in message


def test_reader_reads_plain_dtypes_and_big_endian(tmp_path):
    tensors = {"f16": (19, np.arange(6, dtype=np.float16).reshape(2, 3)), "f64": (2, np.array([1.5, -2.0])),
               "i32": (3, np.array([[1, -2]], dtype=np.int32)), "i64": (9, np.array([2 ** 40], dtype=np.int64)),
               "b": (10, np.array([True, False])), "scalar": (1, np.array(0.25, dtype=np.float32))}
    for big in (False, True):
        prefix = tmp_path / f"model-{int(big)}"
        write_bundle(prefix, tensors, big_endian=big)
        checkpoint = TFCheckpoint(prefix)
        for name, (_, array) in tensors.items():
            value = checkpoint.read(name)
            assert value.dtype == array.dtype.newbyteorder("=") and np.array_equal(value, array), name


def test_reader_refuses_an_unknown_dtype(tmp_path):
    write_bundle(tmp_path / "m", {"s": (7, np.zeros(2, dtype=np.uint8))})  # DT_STRING
    message = one_line_error(pytest.raises(UserError, TFCheckpoint(tmp_path / "m").read, "s"))
    assert "dtype 7" in message and "m.index" in message


# ----------------------------------------------------------------------------- mapping


def _released_shapes(config: str, graph: str) -> dict[str, list[int]]:
    return {v["name"]: v["shape"] for v in RELEASED["configs"][config][graph] if not is_optimizer_slot(v["name"])}


@pytest.mark.parametrize("config", ["full", "light"])
def test_every_released_variable_maps_at_its_shape(config):
    train = _released_shapes(config, "train_graph")
    assert len(train) == 248 + 28  # model variables and spectral-norm u: no optimiser slot is left
    arch = infer_arch(train)
    assert (arch.light, arch.img_size, arch.ch, arch.n_res, arch.n_dis) == (config == "light", 256, 64, 4, 6)
    assert expected_tf_shapes(arch) == {name: tuple(shape) for name, shape in train.items()}
    test = _released_shapes(config, "test_graph")
    assert infer_arch(test) == arch
    assert expected_tf_shapes(arch, ["genA2B", "genB2A"]) == {name: tuple(shape) for name, shape in test.items()}


def test_the_older_cam_layout_maps_to_the_legacy_head():
    shapes = _released_shapes("full", "train_graph")
    for scope in ("generator_A", "generator_B"):
        shapes[f"{scope}/CAM_logit/dense/kernel"], shapes[f"{scope}/CAM_logit/dense/bias"] = [256, 1], [1]
    arch = infer_arch(shapes)
    assert arch.legacy_cam
    mapping = variable_map(arch)
    assert mapping["generator_B/CAM_logit/dense/kernel"] == ("genA2B", "cam.weight")
    assert mapping["generator_B/CAM_logit/kernel"] == ("genA2B", "cam.feature_weight")
    assert mapping["discriminator_A/local/CAM_logit/kernel"] == ("disA", "branches.local.cam.weight")


def test_legacy_cam_scores_with_the_dense_layer_and_weights_with_its_own_variables():
    torch.manual_seed(0)
    cam = build_ugatit_tf(UGATITTFArch(**{**TINY.__dict__, "legacy_cam": True}))["genA2B"].cam
    x = torch.randn(1, 8, 3, 3)
    features, logits = cam(x)
    assert torch.allclose(logits[:, 0], x.mean((2, 3)) @ cam.weight[0] + cam.bias)
    assert torch.allclose(features[:, :8], x * (cam.feature_weight + cam.feature_bias).view(1, -1, 1, 1))


@pytest.mark.parametrize("arch", [TINY, TINY_FULL, UGATITTFArch(**{**TINY.__dict__, "legacy_cam": True})],
                         ids=["light", "full", "legacy"])
def test_mapping_round_trips(arch):
    torch.manual_seed(1)
    nets = build_ugatit_tf(arch)
    states = {name: net.state_dict() for name, net in nets.items()}
    variables = tf_variables_from(arch, states)
    assert {k: v.shape for k, v in variables.items()} == expected_tf_shapes(arch)
    assert infer_arch({k: v.shape for k, v in variables.items()}, img_size=arch.img_size) == arch
    back = state_dicts_from_tf(arch, variables.__getitem__)
    for name in NET_NAMES:
        assert back[name].keys() == states[name].keys()
        for key, value in states[name].items():
            assert torch.equal(back[name][key], value), f"{name}.{key}"


def test_kernel_layouts_are_transposed():
    torch.manual_seed(2)
    nets = build_ugatit_tf(TINY_FULL)
    variables = tf_variables_from(TINY_FULL, {n: net.state_dict() for n, net in nets.items()})
    conv = nets["genA2B"].down[0].conv.weight  # OIHW
    assert np.array_equal(variables["generator_B/conv_0/conv2d/kernel"], conv.permute(2, 3, 1, 0).detach().numpy())
    dense = nets["genA2B"].mlp.linear_0.weight  # [out, in]
    assert np.array_equal(variables["generator_B/MLP/linear_0/dense/kernel"], dense.t().detach().numpy())
    assert variables["discriminator_A/global/conv_0/u"].shape == (1, 2)


def _fixture_shapes() -> dict[str, tuple[int, ...]]:
    return {n: s for n, s in TFCheckpoint(LIGHT).shapes().items() if not is_optimizer_slot(n)}


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.update({"generator_B/extra/kernel": (1,)}), "unexpected variable generator_B/extra/kernel"),
    (lambda s: s.pop("discriminator_B/local/D_logit/u"), "missing variable discriminator_B/local/D_logit/u"),
    (lambda s: s.update({"generator_A/G_logit/conv2d/bias": (4,)}), "generator_A/G_logit/conv2d/bias has shape [4]"),
    (lambda s: s.update({"generator_B/MLP/linear_0/dense/kernel": (8, 16)}), "the MLP is 16 wide"),
    (lambda s: s.pop("generator_B/conv/conv2d/kernel"), "has no variable generator_B/conv/conv2d/kernel"),
])
def test_mapping_refuses_other_layouts(change, expected):
    shapes = _fixture_shapes()
    change(shapes)
    assert expected in one_line_error(pytest.raises(UserError, infer_arch, shapes, 96))


def test_full_models_record_their_image_size():
    shapes = {k: v.shape for k, v in tf_variables_from(
        TINY_FULL, {n: net.state_dict() for n, net in build_ugatit_tf(TINY_FULL).items()}).items()}
    assert infer_arch(shapes).img_size == 24
    assert "not 32" in one_line_error(pytest.raises(UserError, infer_arch, shapes, 32))
    assert infer_arch(_fixture_shapes()).img_size == 256  # light: the official default unless given


def test_generator_only_checkpoints_read_into_the_two_generators(tmp_path):
    checkpoint = TFCheckpoint(LIGHT)
    generators = {n: (1, checkpoint.read(n)) for n in checkpoint.entries
                  if n.startswith("generator_") and not is_optimizer_slot(n)}
    write_bundle(tmp_path / "test.model", generators)
    arch, states = read_tf_checkpoint(tmp_path, img_size=96)
    assert set(states) == {"genA2B", "genB2A"} and arch.n_dis == 6
    _, full = read_tf_checkpoint(LIGHT, img_size=96)
    for name in states:
        for key, value in states[name].items():
            assert torch.equal(value, full[name][key])


def test_optimizer_slots_are_recognised():
    assert all(map(is_optimizer_slot, ["a/kernel/Adam", "a/kernel/Adam_1", "beta1_power", "beta2_power_1"]))
    assert not any(map(is_optimizer_slot, ["a/kernel", "discriminator_A/local/conv_0/u", "Adam/kernel"]))


# ----------------------------------------------------------------------------- architecture and networks


@pytest.mark.parametrize("kwargs, expected", [
    ({"img_size": 30}, "multiple of 4"),
    ({"img_size": 64, "n_dis": 6}, "n_dis 6 is too deep for img_size 64"),
    ({"n_dis": 3}, "n_dis must be at least 4"),
    ({"ch": 0}, "ch must be at least 1"),
    ({"n_res": 0}, "n_res must be at least 1"),
])
def test_impossible_architectures_are_refused(kwargs, expected):
    message = one_line_error(pytest.raises(UserError, UGATITTFArch, **{"img_size": 96, **kwargs}))
    assert expected in message


def test_deep_discriminator_error_suggests_what_fits():
    message = one_line_error(pytest.raises(UserError, UGATITTFArch, img_size=64, n_dis=6))
    assert "n_dis <= 5" in message and "img_size >= 96" in message
    assert [deepest_n_dis(s) for s in (20, 24, 44, 48, 96, 256)] == [None, 4, 4, 5, 6, 7]


@pytest.mark.parametrize("arch", [TINY, TINY_FULL], ids=["light", "full"])
def test_network_shapes(arch):
    torch.manual_seed(3)
    nets = build_ugatit_tf(arch)
    x = torch.rand(2, 3, 24, 24) * 2 - 1
    image, cam_logit, heatmap = nets["genA2B"](x)
    assert image.shape == x.shape and cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, 6, 6)
    out = nets["disA"](x)
    assert [t.shape for t in out.logits] == [(2, 1, 12, 12), (2, 1, 3, 3)]  # 'same'-size 4x4 stride-1 convs
    assert [t.shape for t in out.cam_logits] == [(2, 2), (2, 2)]
    assert nets["genA2B"].mlp.gamma.weight.shape == (8, 8)  # 4 * ch whatever n_res (TF: ch * n_res)


def test_initialisation_is_tf_s():
    torch.manual_seed(4)
    gen = build_ugatit_tf(UGATITTFArch(img_size=24, ch=16, n_res=1, n_dis=4))["genA2B"]
    assert abs(gen.down[1].conv.weight.std().item() - 0.02) < 1e-3 and not gen.down[1].conv.bias.any()
    assert torch.all(gen.adaptive_resblocks[0].norm1.rho == 1) and torch.all(gen.up[0].norm.rho == 0)
    assert torch.all(gen.ins_norm.gamma == 1) and not gen.ins_norm.beta.any()


def test_spectral_norm_advances_u_once_per_call_from_the_stored_u():
    torch.manual_seed(5)
    dis = build_ugatit_tf(TINY)["disA"]
    conv = dis.branches["global"].convs[1]
    real, fake = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24)
    start = copy.deepcopy(dis.state_dict())
    batched = dis(torch.cat([real, fake]))
    u_batched = conv.u.clone()
    _, u_hat = power_iteration(start["branches.global.convs.1.weight"].flatten(1), start["branches.global.convs.1.u"])
    assert torch.allclose(u_batched, u_hat)
    dis.load_state_dict(start)
    alone = dis(fake)  # from the same stored u: what TF's second call in the D step sees
    assert torch.allclose(batched.logits[1][1:], alone.logits[1], atol=1e-6)
    dis(fake)  # a further call continues from u'
    assert not torch.equal(conv.u, u_batched)


def test_sn_outputs_is_the_same_math():
    torch.manual_seed(6)
    nets = build_ugatit_tf(TINY)
    fast = copy.deepcopy(nets["disB"])
    set_sn_outputs(fast, True)
    x = torch.rand(2, 3, 24, 24)
    slow_out, fast_out = nets["disB"](x), fast(x)
    for a, b in zip(slow_out.logits + slow_out.cam_logits, fast_out.logits + fast_out.cam_logits):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(nets["disB"].buffers(), fast.buffers()))


def test_smoothing_caps_rho_at_point_nine():
    torch.manual_seed(7)
    block = build_ugatit_tf(TINY)["genA2B"].adaptive_resblocks[0].norm1
    x, gamma, beta = torch.randn(1, 8, 4, 4), torch.ones(1, 8, 1, 1), torch.zeros(1, 8, 1, 1)
    smoothed = block(x, gamma, beta)
    block.smoothing = False
    with torch.no_grad():
        block.rho.fill_(0.9)
    assert torch.allclose(smoothed, block(x, gamma, beta))


# ----------------------------------------------------------------------------- schedule


def test_lr_schedule_is_tf_s_per_epoch_decay():
    lr = lambda step: tf_lr(step, 1e-4, 1_000_000, 10_000, True, 50)  # noqa: E731
    assert lr(1) == lr(500_000) == lr(510_000) == 1e-4  # epochs 0..50: 50 / 50
    assert lr(510_001) == lr(520_000) == 1e-4 * 49 / 50
    assert lr(1_000_000) == pytest.approx(2e-6) and lr(1_000_001) == lr(1_000_000)
    assert tf_lr(900_000, 1e-4, 1_000_000, 10_000, False, 50) == 1e-4
    assert tf_lr(25, 1.0, 40, 10, True, 2) == 1.0 * 2 / 2 and tf_lr(31, 1.0, 40, 10, True, 2) == 0.5


# ----------------------------------------------------------------------------- trainer


def options(**changes) -> types.SimpleNamespace:
    base = dict(lr=1e-4, weight_decay=1e-4, adv_weight=1, cycle_weight=10, identity_weight=10, cam_weight=1000,
                gan_type="lsgan", gp_weight=10, n_critic=1, iters=40, epoch_iters=10, decay_flag=True,
                decay_epoch=2, fused_adam=False, precision="fp32", memory="normal")
    return types.SimpleNamespace(**{**base, **changes})


def batches(n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 24, 24, generator=generator) * 2 - 1 for _ in range(n)]


def fresh(arch=TINY, seed: int = 8, **changes) -> tuple[dict, UGATITTFTrainer]:
    torch.manual_seed(seed)
    nets = build_ugatit_tf(arch)
    return nets, UGATITTFTrainer(nets, options(**changes))


def run(trainer: UGATITTFTrainer, steps: range, *batch: torch.Tensor):
    results = []
    for step in steps:
        trainer.begin_step(step)
        results.append(trainer.step(*batch))
    return results


def states_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(x, y) for n in NET_NAMES
               for x, y in zip(a[n].state_dict().values(), b[n].state_dict().values()))


def test_loss_functions_of_each_gan_type():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])
    expected_d = {"lsgan": 1.0 + 1.0, "wgan-gp": -1.0 + 0.0, "hinge": 0.5 + 1.0,
                  "gan": float(torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean())}
    expected_g = {"lsgan": 2.0, "wgan-gp": 0.0, "hinge": 0.0, "gan": float(torch.nn.functional.softplus(-fake).mean())}
    for gan_type in GAN_TYPES:
        family = {"wgan-lp": "wgan-gp", "dragan": "gan"}.get(gan_type, gan_type)
        assert discriminator_loss(gan_type, real, fake).item() == pytest.approx(expected_d[family])
        assert generator_loss(gan_type, fake).item() == pytest.approx(expected_g[family])


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_every_gan_type_trains_with_finite_losses(gan_type):
    nets, trainer = fresh(gan_type=gan_type)
    result = run(trainer, range(1, 2), *batches())[0]
    losses = floats(result)
    assert all(math.isfinite(v) for v in losses.values())
    penalised = gan_type in ("wgan-gp", "wgan-lp", "dragan")
    assert ("GP_A" in losses) == penalised and ("GP_CAM_B" in losses) == penalised
    if penalised:
        assert losses["D_A_loss"] == pytest.approx(losses["D_ad_A_logit"] + losses["D_ad_A_cam"] + losses["GP_A"]
                                                   + losses["GP_CAM_A"], rel=1e-5)


def test_gan_types_give_different_losses_and_lp_penalises_less_than_gp():
    losses = {}
    for gan_type in GAN_TYPES:
        nets, trainer = fresh(gan_type=gan_type)
        torch.manual_seed(9)  # the same penalty samples for every type
        losses[gan_type] = floats(run(trainer, range(1, 2), *batches())[0])
    assert len({round(v["D_ad_A_logit"], 9) for v in losses.values()}) == 4  # lsgan, wgan*, gan/dragan, hinge
    assert losses["wgan-gp"]["D_ad_A_logit"] == losses["wgan-lp"]["D_ad_A_logit"]
    assert losses["gan"]["D_ad_A_logit"] == losses["dragan"]["D_ad_A_logit"]
    assert losses["wgan-lp"]["GP_A"] <= losses["wgan-gp"]["GP_A"]


def test_regularization_covers_kernels_only():
    torch.manual_seed(10)
    dis = build_ugatit_tf(TINY)["disA"]
    kernels = [m.weight for m in dis.modules() if isinstance(m, (TFConv, CAM))]
    expected = sum(1e-4 * k.detach().square().sum().item() / 2 for k in kernels)
    assert regularization([dis], 1e-4).item() == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():  # biases and spectral-norm u are not regularised
        for module in dis.modules():
            if isinstance(module, (TFConv, CAM)):
                module.bias.fill_(100.0)
                if module.sn:
                    module.u.fill_(100.0)
    assert regularization([dis], 1e-4).item() == pytest.approx(expected, rel=1e-6)
    gen = build_ugatit_tf(TINY)["genA2B"]
    assert not any(p is gen.up[0].norm.rho or p is gen.ins_norm.gamma for p in regularized_kernels(gen))
    assert any(p is gen.mlp.linear_0.weight for p in regularized_kernels(gen))


def test_n_critic_updates_the_generators_every_n_steps():
    nets, trainer = fresh(n_critic=2)
    real_A, real_B = batches()
    seen = []
    for step in (1, 2, 3):
        before = copy.deepcopy(nets["genA2B"].state_dict())
        trainer.begin_step(step)
        losses = trainer.step(real_A, real_B).losses
        changed = not all(torch.equal(a, b) for a, b in zip(before.values(), nets["genA2B"].state_dict().values()))
        seen.append((changed, "Generator_loss" in losses, "Discriminator_loss" in losses))
    assert seen == [(True, True, True), (False, False, True), (True, True, True)]


def test_separate_g_batches():
    """Each step may get its own batch (TF pulls one per sess.run); a G batch equal to the D batch
    gives the numbers of the shared batch (whose G step reuses the D step's translations)."""
    real_A, real_B, other_A, other_B = batches(4)
    nets_shared, shared = fresh()
    nets_same, same = fresh()
    nets_other, other = fresh()
    r_shared = floats(run(shared, range(1, 2), real_A, real_B)[0])
    r_same = floats(run(same, range(1, 2), real_A, real_B, real_A, real_B)[0])
    r_other = floats(run(other, range(1, 2), real_A, real_B, other_A, other_B)[0])
    assert r_same == pytest.approx(r_shared, rel=1e-6, abs=1e-9)  # reusing the D step's fakes changes nothing
    assert all(r_other[k] == r_shared[k] for k in r_shared if k.startswith("D_") or k == "Discriminator_loss")
    assert r_other["reconstruction_A"] != r_shared["reconstruction_A"]


def test_resume_is_exact():
    batch = batches()
    nets_a, straight = fresh()
    expected = floats(run(straight, range(1, 3), *batch)[-1])

    nets_b, first = fresh()
    run(first, range(1, 2), *batch)
    saved_nets = {n: copy.deepcopy(net.state_dict()) for n, net in nets_b.items()}
    saved_trainer = copy.deepcopy(first.state_dict())

    nets_c, resumed = fresh(seed=99)  # other initial weights, all overwritten by the checkpoint
    for name, net in nets_c.items():
        net.load_state_dict(saved_nets[name])
    resumed.load_state_dict(saved_trainer)
    assert floats(run(resumed, range(2, 3), *batch)[-1]) == expected
    assert states_equal(nets_a, nets_c)


def test_lr_follows_begin_step():
    nets, trainer = fresh()
    trainer.begin_step(31)
    assert trainer.lr == pytest.approx(0.5e-4)


def test_rho_stays_in_unit_interval():
    nets, trainer = fresh(lr=0.5)
    run(trainer, range(1, 3), *batches())
    rhos = [p for n in ("genA2B", "genB2A") for k, p in nets[n].named_parameters() if k.endswith("rho")]
    assert all(((r >= 0) & (r <= 1)).all() for r in rhos)


def test_fused_adam_matches_the_plain_update():
    """Same update, other rounding: parameters whose gradient is rounding noise may step the other
    way (Adam moves them by ~lr either way), so compare the next iteration's losses."""
    nets_plain, plain = fresh()
    nets_fused, fused = fresh(fused_adam=True)
    assert fused.G_optim.defaults["fused"] and not plain.G_optim.defaults["fused"]
    batch = batches()
    expected = floats(run(plain, range(1, 3), *batch)[-1])
    assert floats(run(fused, range(1, 3), *batch)[-1]) == pytest.approx(expected, rel=1e-4)


def test_bf16_autocast_step_is_finite():
    nets, trainer = fresh(precision="bf16")
    losses = floats(run(trainer, range(1, 2), *batches())[0])
    assert all(math.isfinite(v) for v in losses.values())


def test_trainer_refuses_unknown_options():
    torch.manual_seed(0)
    nets = build_ugatit_tf(TINY)
    assert "gan_type" in one_line_error(pytest.raises(UserError, UGATITTFTrainer, nets, options(gan_type="wgan")))
    assert "n_critic" in one_line_error(pytest.raises(UserError, UGATITTFTrainer, nets, options(n_critic=0)))


# ----------------------------------------------------------------------------- transforms


def test_tf_bilinear_resize_uses_the_legacy_grid():
    image = torch.tensor([[[0.0, 10.0], [20.0, 30.0]]])
    assert torch.equal(tf_resize_bilinear(image, 4)[0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))  # no half-pixel offset
    x = torch.rand(3, 7, 7)
    assert torch.equal(tf_resize_bilinear(x, 7), x)


def _image(seed: int, size=(40, 30)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def test_train_transform_is_reproducible_and_augments_about_half():
    image = _image(0)
    transform = TFTrainTransform(32)
    outputs = [transform(image, torch.Generator().manual_seed(s)) for s in range(40)]
    assert all(o.shape == (3, 32, 32) and o.min() >= -1 and o.max() <= 1 for o in outputs)
    assert torch.equal(outputs[3], transform(image, torch.Generator().manual_seed(3)))
    plain = TFTrainTransform(32, augment=False)(image)
    unchanged = sum(torch.equal(o, plain) for o in outputs)
    assert 8 <= unchanged <= 32  # p 0.5 per image


def test_test_transform_matches_opencv_within_one_level():
    cv2 = pytest.importorskip("cv2")
    for seed, (size, target) in enumerate([((300, 200), 256), ((97, 130), 96), ((50, 50), 128)]):
        image = _image(seed, size)
        ours = TFInferenceTransform(target)(image).permute(1, 2, 0).numpy()
        ref = (cv2.resize(np.asarray(image), (target, target)) / 127.5 - 1).astype(np.float32)
        assert np.abs(ours - ref).max() <= 1.0001 / 127.5
