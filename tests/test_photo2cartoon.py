"""photo2cartoon: Soft-AdaLIN and hourglass maths, the authors' weight layouts, the face-ID loss, training."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unpaired.checkpoint import load_weights, read_arch, save_weights, states_of
from unpaired.errors import UserError
from unpaired.inference.loading import identify
from unpaired.models.photo2cartoon.mobilefacenet import MobileFaceNet, load_mobilefacenet
from unpaired.models.photo2cartoon.networks import (
    ConvBlock,
    HourGlass,
    HourGlassBlock,
    Photo2CartoonGenerator,
    SoftAdaLIN,
    build_photo2cartoon,
    clip_blend_weights,
)
from unpaired.models.photo2cartoon.official import infer_photo2cartoon_arch, load_official
from unpaired.models.photo2cartoon.options import Photo2CartoonOptions, validate_photo2cartoon
from unpaired.models.photo2cartoon.train import FaceIDLoss, Photo2CartoonTrainer, face_crop
from unpaired.models.registry import family
from unpaired.models.ugatit.options import resolve_n_dis
from unpaired.nn import ILN
from unpaired.options import build

EPS = 1e-5

# (tensor count, element count, sha256[:16] of the sorted "key:shape" lines) of the state_dicts the
# authors' code builds: models/networks.py ResnetGenerator(ngf=32, img_size=256, light=True) and
# models/mobilefacenet.py MobileFaceNet(512) of minivision-ai/photo2cartoon, instantiated as they are.
OFFICIAL_GENERATOR = (406, 3_831_079, "c1c1c470b38747cc")
OFFICIAL_MOBILEFACENET = (333, 1_220_914, "35f3e2e47f751c17")


pytestmark = pytest.mark.usefixtures("one_thread")


def options(**values) -> Photo2CartoonOptions:
    """Options built as flags and config files are (flat names, every value checked on entry)."""
    return build(Photo2CartoonOptions, ("the test", values))


def floats(result) -> dict[str, float]:
    return {name: value.item() for name, value in result.losses.items()}


def digest(state: dict[str, torch.Tensor]) -> tuple[int, int, str]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return len(state), sum(v.numel() for v in state.values()), hashlib.sha256(lines.encode()).hexdigest()[:16]


def official_layout(gen: Photo2CartoonGenerator) -> dict[str, torch.Tensor]:
    """Our generator's state_dict as the authors' code saves it: every hourglass unit also holds
    its (unused) square 1×1 shortcut conv."""
    state = dict(gen.state_dict())
    for name, module in gen.named_modules():
        if isinstance(module, ConvBlock) and module.ConvBlock4 is None:
            width = module.ConvBlock1[-1].in_channels
            state[f"{name}.ConvBlock4.2.weight"] = torch.randn(width, width, 1, 1)
    return state


# -- hand-computed references ---------------------------------------------------------------

def instance_norm(x, eps=EPS):  # nn.InstanceNorm2d: biased variance
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def unbiased_norm(x, dims, eps=EPS):  # the LIN statistics
    mean = x.mean(dim=dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (n - 1)
    return (x - mean) / torch.sqrt(var + eps)


def pre_activation_conv(x, weight):
    pad = weight.shape[-1] // 2
    x = torch.relu(instance_norm(x))
    return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect") if pad else x, weight)


def pool(x):  # 2×2 average
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def upsample(x):  # nearest 2×
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


# -- building blocks ------------------------------------------------------------------------

def test_soft_adalin_matches_formula():
    torch.manual_seed(0)
    channels, batch = 3, 2
    layer = SoftAdaLIN(channels)
    with torch.no_grad():
        layer.norm.rho.copy_(torch.tensor([0.0, 0.3, 1.0]).view(1, 3, 1, 1))
        layer.w_gamma.copy_(torch.tensor([[0.0, 0.25, 1.0]]))
        layer.w_beta.copy_(torch.tensor([[0.5, 1.0, 0.0]]))
    x = torch.randn(batch, channels, 3, 4)
    content, style = torch.randn(batch, channels), torch.randn(batch, channels)

    def linear(v, lin):
        return v @ lin.weight.T + lin.bias

    def mlp(v, seq):
        return linear(torch.relu(linear(v, seq[0])), seq[2])

    with torch.no_grad():
        gamma = (1 - layer.w_gamma) * linear(style, layer.s_gamma) + layer.w_gamma * mlp(content, layer.c_gamma)
        beta = (1 - layer.w_beta) * linear(style, layer.s_beta) + layer.w_beta * mlp(content, layer.c_beta)
        rho = layer.norm.rho
        mixed = rho * unbiased_norm(x, (2, 3)) + (1 - rho) * unbiased_norm(x, (1, 2, 3))
        expected = mixed * gamma[:, :, None, None] + beta[:, :, None, None]
        got = layer(x, content, style)
    assert torch.allclose(got, expected, atol=1e-5)
    # channel 0: w_gamma 0 → pure style γ; channel 2: w_gamma 1 → pure content γ
    assert not torch.allclose(gamma[:, 0], mlp(content, layer.c_gamma)[:, 0])


def test_clip_blend_weights_clamps_only_the_blend_weights():
    layer = SoftAdaLIN(2)
    with torch.no_grad():
        layer.w_gamma.copy_(torch.tensor([[-0.5, 1.5]]))
        layer.w_beta.copy_(torch.tensor([[0.7, 2.0]]))
        layer.norm.rho.fill_(3.0)
    clip_blend_weights(nn.Sequential(layer), 0.0, 0.8)
    assert layer.w_gamma.tolist() == [[0.0, pytest.approx(0.8)]]
    assert layer.w_beta.tolist() == [[pytest.approx(0.7), pytest.approx(0.8)]]
    assert torch.all(layer.norm.rho == 3.0)


@pytest.mark.parametrize("dim_in", [4, 8])
def test_conv_block_matches_formula(dim_in):
    torch.manual_seed(1)
    block = ConvBlock(dim_in, 8)
    x = torch.randn(2, dim_in, 6, 6)
    with torch.no_grad():
        x1 = pre_activation_conv(x, block.ConvBlock1[-1].weight)
        x2 = pre_activation_conv(x1, block.ConvBlock2[-1].weight)
        x3 = pre_activation_conv(x2, block.ConvBlock3[-1].weight)
        residual = x if dim_in == 8 else pre_activation_conv(x, block.ConvBlock4[-1].weight)
        expected = residual + torch.cat([x1, x2, x3], 1)
        assert torch.allclose(block(x), expected, atol=1e-5)
    assert (block.ConvBlock4 is None) == (dim_in == 8)
    assert [t.shape[1] for t in (x1, x2, x3)] == [4, 2, 2]


def test_hourglass_block_wiring():
    """Each unit replaced by a distinct scaling: the output is a closed form of pools and up-samplings."""
    block = HourGlassBlock(4)
    factors = {"1_1": 2, "1_2": 3, "2_1": 5, "2_2": 7, "3_1": 11, "3_2": 13, "4_1": 17, "4_2": 19,
               "5": 23, "6": 29, "7": 31, "8": 37, "9": 41}
    for name, factor in factors.items():
        setattr(block, f"ConvBlock{name}", Scale(factor))
    s = factors
    x = torch.randn(1, 4, 32, 32)
    a1 = s["1_2"] * pool(x)
    a2 = s["2_2"] * pool(a1)
    a3 = s["3_2"] * pool(a2)
    centre = s["5"] * s["4_2"] * pool(a3)
    up = s["4_1"] * a3 + upsample(s["6"] * centre)
    up = s["3_1"] * a2 + upsample(s["7"] * up)
    up = s["2_1"] * a1 + upsample(s["8"] * up)
    expected = s["1_1"] * x + upsample(s["9"] * up)
    assert torch.allclose(block(x), expected, rtol=1e-5)


@pytest.mark.parametrize("use_res", [True, False])
def test_hourglass_stage_formula(use_res):
    torch.manual_seed(2)
    stage = HourGlass(4, use_res=use_res)
    stage.HG = Scale(0.5)
    x = torch.randn(2, 4, 16, 16)

    def conv1x1(v, conv):
        return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], v) + conv.bias.view(1, -1, 1, 1)

    with torch.no_grad():
        side = conv1x1(0.5 * x, stage.Conv1)
        expected = x + conv1x1(0.5 * x, stage.Conv2) + conv1x1(side, stage.Conv3) if use_res else side
        assert torch.allclose(stage(x), expected, atol=1e-5)
    assert stage(x).shape[1] == (4 if use_res else 3)


def test_lin_then_hourglass_unit_exports_to_onnx():
    """The generator's decoder runs LIN into an hourglass unit (InstanceNorm first): the exporter
    must still know the channel count after LIN (it does not after an expand to the batch size)."""
    ort = pytest.importorskip("onnxruntime")
    net = nn.Sequential(ILN(4), nn.ReLU(), ConvBlock(4, 4)).eval()
    x = torch.randn(2, 4, 8, 8)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (x[:1],), buffer, dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    (y,) = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(y), net(x), atol=1e-5)


def test_generator_shapes_and_size_limits():
    torch.manual_seed(3)
    gen = Photo2CartoonGenerator(ch=4, n_res=2, img_size=32, light=True)
    image, cam_logit, heatmap = gen(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert image.shape == (2, 3, 32, 32) and cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, 8, 8)
    assert image.abs().max() <= 1
    assert [type(b.norm1).__name__ for b in gen.decoder_blocks()] == ["SoftAdaLIN", "SoftAdaLIN"]
    for bad in (16, 40):
        with pytest.raises(ValueError, match="multiple of 16"):
            Photo2CartoonGenerator(ch=4, img_size=bad)


def test_decoder_blocks_take_content_deepest_first_and_one_style():
    """Encoder blocks add a zero-mean (instance-normalised) residual, so their pooled outputs are
    equal up to rounding; shifting each block's output by its index makes them distinguishable."""
    torch.manual_seed(11)
    gen = Photo2CartoonGenerator(ch=4, n_res=3, img_size=32)
    pooled, conditions, style = [], [], []

    def shift(index):
        def hook(module, args, out):
            out = out + index
            pooled.append(out.mean(dim=(2, 3)))
            return out
        return hook

    for i, block in enumerate(gen.encoder_blocks()):
        block.register_forward_hook(shift(float(i)))
    for block in gen.decoder_blocks():
        block.register_forward_pre_hook(lambda m, args: conditions.append(args[1:]))
    gen.FC.register_forward_hook(lambda m, args, out: style.append(out))
    with torch.no_grad():
        gen(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert len(conditions) == 3
    for (content, block_style), expected in zip(conditions, reversed(pooled)):
        assert torch.allclose(content, expected, atol=1e-6)
        assert block_style is style[0]


# -- the authors' weight files ----------------------------------------------------------------

def test_generator_has_the_authors_layout():
    gen = Photo2CartoonGenerator(ch=32, img_size=256, light=True)  # the released model's arguments
    assert digest(official_layout(gen)) == OFFICIAL_GENERATOR
    assert gen.state_dict()["DecodeBlock1.norm1.w_gamma"].shape == (1, 128)
    assert gen.state_dict()["gap_fc.bias"].shape == (1,)


def test_load_official_photo2cartoon_strict(tmp_path):
    torch.manual_seed(4)
    arch = options(img_size=32, ch=4, n_res=2, n_dis=4).arch
    nets = build_photo2cartoon(arch)
    official = {name: official_layout(net) if name.startswith("gen") else net.state_dict()
                for name, net in nets.items()}
    official["genB2A"] = {f"module.{k}": v for k, v in official["genB2A"].items()}  # DataParallel save
    path = tmp_path / "photo2cartoon_weights.pt"
    torch.save(official, path)

    found_arch, states = load_official(path, 32)
    assert found_arch == arch
    fresh = build_photo2cartoon(arch)
    for name, net in fresh.items():
        net.load_state_dict(states[name], strict=True)
        loaded = net.state_dict()
        for key, tensor in nets[name].state_dict().items():
            assert torch.equal(loaded[key], tensor), (name, key)
    assert infer_photo2cartoon_arch(states, img_size=32) == arch

    torch.save({"genA2B": official["genA2B"]}, path)  # the released file may hold one generator
    found_arch, states = load_official(path, 32)
    assert set(states) == {"genA2B"} and found_arch == dataclasses.replace(arch, n_dis=6)  # no D: default depth
    assert identify(path, 32).model == "photo2cartoon"
    torch.save({"weights": 1}, path)
    assert load_official(path, 32) is None  # not this family's file: the loader asks the other families
    with pytest.raises(UserError, match="is not a checkpoint"):
        identify(path, 32)
    with pytest.raises(UserError, match="not found"):
        load_official(tmp_path / "missing.pt", 32)


def test_mobilefacenet_layout_output_and_loading(tmp_path):
    torch.manual_seed(5)
    net = MobileFaceNet()
    assert digest(net.state_dict()) == OFFICIAL_MOBILEFACENET
    with torch.no_grad():
        for module in net.modules():  # non-trivial BatchNorm statistics, as in trained weights
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model_mobilefacenet.pth"
    torch.save(net.state_dict(), path)
    loaded = load_mobilefacenet(path).eval()
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        embedding = loaded(x)
        assert torch.equal(embedding, net.eval()(x))
    assert embedding.shape == (2, 512)
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)

    state = net.state_dict()
    state.pop("bn.running_var")
    torch.save(state, path)
    with pytest.raises(UserError, match="bn.running_var"):
        load_mobilefacenet(path)
    with pytest.raises(UserError, match="not found"):
        load_mobilefacenet(tmp_path / "missing.pth")


# -- face-ID loss ---------------------------------------------------------------------------------

def test_face_crop_is_the_authors_box():
    h = w = 256
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    crop = face_crop(torch.cat([rows, cols], 1))
    # top = int(256/2.1·0.47) = 57, bottom = int(256 − 256/2.1·0.3) = 219, left = int(128 − 162/2) = 47
    assert crop.shape == (1, 2, 112, 112)
    assert crop[0, 0, 0, 0] == 57 and crop[0, 0, -1, 0] == 218
    assert crop[0, 1, 0, 0] == 47 and crop[0, 1, 0, -1] == 208


def test_face_id_loss_values_and_gradient():
    torch.manual_seed(6)
    loss_fn = FaceIDLoss(MobileFaceNet())
    loss_fn.train()  # must stay in eval mode: the BatchNorm statistics belong to the weights
    assert not loss_fn.embedder.training
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss_fn(real, real.clone()).abs() < 1e-6
    other = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        e_real, e_other = loss_fn.embedder(face_crop(real)), loss_fn.embedder(face_crop(other))
        per_sample = 1 - (e_real * e_other).sum(dim=1)  # unit vectors: the dot product is the cosine
        assert loss_fn(real, other) == pytest.approx(per_sample.mean().item(), rel=1e-5)
    assert per_sample.min() > 0

    gen = Photo2CartoonGenerator(ch=4, n_res=1, img_size=32)
    loss = loss_fn(real, gen(real)[0])
    assert loss.dim() == 0 and loss > 0
    loss.backward()
    assert all(p.grad is None for p in loss_fn.embedder.parameters())
    assert gen.ConvBlock1[1].weight.grad.abs().sum() > 0


# -- config and training ------------------------------------------------------------------------

def test_config_defaults_are_the_authors():
    cfg = Photo2CartoonOptions()
    arch = cfg.arch
    assert (cfg.model, arch.light, arch.ch, arch.img_size, arch.n_res) == ("photo2cartoon", True, 32, 256, 4)
    assert (cfg.adv_weight, cfg.cycle_weight, cfg.identity_weight, cfg.cam_weight) == (1, 50, 10, 1000)
    assert (cfg.face_id_weight, cfg.face_id_weights, cfg.lr, cfg.weight_decay) == (1, None, 1e-4, 1e-4)
    assert (arch.global_layers, arch.local_layers) == (7, 5)
    assert options() == cfg
    validate_photo2cartoon(cfg)
    # each refused on entry (a single value out of range) or by validate (what the hourglasses need)
    for bad in ({"img_size": 40}, {"ch": 6}, {"w_clipper": 1.5}, {"face_id_weight": -1}):
        with pytest.raises(UserError):
            validate_photo2cartoon(options(**bad))


def tiny_config(**overrides) -> Photo2CartoonOptions:
    cfg, _ = resolve_n_dis(options(img_size=32, ch=4, n_res=1, batch_size=2, iters=3, **overrides))
    validate_photo2cartoon(cfg)
    return cfg


def test_face_id_loss_off_without_weights_is_logged(caplog):
    torch.manual_seed(7)
    cfg = tiny_config()
    with caplog.at_level(logging.INFO, logger="unpaired"):
        trainer = Photo2CartoonTrainer(build_photo2cartoon(cfg.arch), cfg)
    assert trainer.face_id is None
    assert "face-ID loss off" in caplog.text and "--face-id-weights" in caplog.text


def test_face_id_weights_file_is_loaded(tmp_path):
    torch.manual_seed(8)
    embedder = MobileFaceNet()
    torch.save(embedder.state_dict(), tmp_path / "mfn.pth")
    cfg = tiny_config(face_id_weights=str(tmp_path / "mfn.pth"))
    trainer = Photo2CartoonTrainer(build_photo2cartoon(cfg.arch), cfg)
    assert torch.equal(trainer.face_id.embedder.conv1.conv.weight, embedder.conv1.conv.weight)
    assert not trainer.face_id.embedder.training


def test_tiny_training_run_with_face_id_loss():
    torch.manual_seed(9)
    cfg = tiny_config(w_clipper=0.5)
    nets = build_photo2cartoon(cfg.arch)
    trainer = Photo2CartoonTrainer(nets, cfg, embedder=MobileFaceNet())
    before = {k: v.clone() for k, v in nets["genA2B"].state_dict().items()}
    with torch.no_grad():
        nets["genB2A"].DecodeBlock1.norm2.w_beta.fill_(0.9)  # above w_clipper: the step must clip it
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fakes = {}  # each generator's first output of a step: its translation of the real batch

    def keep_first(name):
        def hook(module, args, out):
            fakes.setdefault(name, out[0].detach().clone())
        return hook

    for name in ("genA2B", "genB2A"):
        nets[name].register_forward_hook(keep_first(name))
    for step in range(1, cfg.iters + 1):
        trainer.begin_step(step)
        fakes.clear()
        result = trainer.step(real_a, real_b)
        losses = floats(result)
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert losses["G_id_loss_A"] > 0 and losses["G_id_loss_B"] > 0
    with torch.no_grad():  # A: photo vs its cartoon; B: cartoon vs its photo
        assert trainer.face_id(real_a, fakes["genA2B"]).item() == pytest.approx(losses["G_id_loss_A"])
        assert trainer.face_id(real_b, fakes["genB2A"]).item() == pytest.approx(losses["G_id_loss_B"])
    for x in ("A", "B"):
        g, l = f"G{x}", f"L{x}"
        expected = (cfg.adv_weight * (losses[f"G_ad_loss_{g}"] + losses[f"G_ad_cam_loss_{g}"]
                                      + losses[f"G_ad_loss_{l}"] + losses[f"G_ad_cam_loss_{l}"])
                    + cfg.cycle_weight * losses[f"G_recon_loss_{x}"]
                    + cfg.identity_weight * losses[f"G_identity_loss_{x}"]
                    + cfg.cam_weight * losses[f"G_cam_loss_{x}"] + cfg.face_id_weight * losses[f"G_id_loss_{x}"])
        assert losses[f"G_loss_{x}"] == pytest.approx(expected, rel=1e-5)
    assert losses["Generator_loss"] == pytest.approx(losses["G_loss_A"] + losses["G_loss_B"], rel=1e-6)
    after = nets["genA2B"].state_dict()
    assert not torch.equal(after["HourGlass1.Conv1.weight"], before["HourGlass1.Conv1.weight"])
    assert not torch.equal(after["DecodeBlock1.norm1.s_gamma.weight"], before["DecodeBlock1.norm1.s_gamma.weight"])
    assert torch.all(nets["genB2A"].DecodeBlock1.norm2.w_beta <= 0.5)
    assert all(p.grad is None for p in trainer.face_id.embedder.parameters())

    # resume: the trainer state survives a weights-only round trip into a fresh trainer
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    buffer.seek(0)
    resumed = Photo2CartoonTrainer(build_photo2cartoon(cfg.arch), cfg, embedder=MobileFaceNet())
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.lr == trainer.lr < cfg.lr
    for optim in ("G_optim", "D_optim"):
        saved, restored = getattr(trainer, optim).state_dict(), getattr(resumed, optim).state_dict()
        assert restored["state"].keys() == saved["state"].keys()
        assert all(torch.equal(restored["state"][i]["exp_avg_sq"], saved["state"][i]["exp_avg_sq"])
                   for i in saved["state"])


def test_weights_round_trip_through_checkpoint(tmp_path):
    torch.manual_seed(10)
    cfg = tiny_config()
    nets = build_photo2cartoon(cfg.arch)
    save_weights(tmp_path / "w.safetensors", states_of(nets), cfg.model, cfg.arch, step=3)
    states, meta = load_weights(tmp_path / "w.safetensors")
    assert meta["model"] == "photo2cartoon"
    arch = family(meta["model"]).arch(read_arch(meta, tmp_path / "w.safetensors"))
    assert arch == cfg.arch
    fresh = build_photo2cartoon(arch)
    for name, net in fresh.items():
        net.load_state_dict(states[name], strict=True)
        loaded = net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in nets[name].state_dict().items())


def test_photo2cartoon_trains_resumes_and_translates_through_the_cli(tmp_path):
    """--model photo2cartoon goes through the shared loop, resume, test and translate."""
    from conftest import make_dataset
    from unpaired import checkpoint as ckpt
    from unpaired.cli import main

    data, run = make_dataset(tmp_path / "data", n_train=4, n_test=2), tmp_path / "run"
    common = ["--img-size", "32", "--ch", "8", "--n-res", "1", "--device", "cpu", "--num-workers", "0",
              "--save-freq", "2", "--print-freq", "2"]
    assert main(["train", "--model", "photo2cartoon", "--data", str(data), "--out", str(run), "--iters", "2",
                 *common]) == 0
    assert "model: photo2cartoon" in (run / "config.yaml").read_text()
    assert main(["train", "--resume", "--out", str(run), "--iters", "3"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")][-1] == "0000003"
    assert main(["test", "--run", str(run), "--device", "cpu"]) == 0
    assert len(list((run / "test" / "A2B" / "translated").iterdir())) == 2
    out = tmp_path / "out"
    assert main(["translate", "--checkpoint", str(run), "--input", str(data / "testB"), "--output", str(out),
                 "--direction", "B2A", "--faces", "off", "--device", "cpu"]) == 0
    assert len(list(out.iterdir())) == 2
