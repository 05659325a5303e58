"""Parity of photo2cartoon with the official minivision-ai/photo2cartoon code, against golden fixtures.

Reads the fixture files in ``$UNPAIRED_P2C_PARITY_DIR`` (default: the copies in
tests/parity_fixtures/p2c, whose README defines the format, the replay and the tolerances):

* training fixtures (a ``meta`` and ``iterations``): their initial checkpoint ``meta["init_file"]``
  (sha256-checked) and the face-ID weights ``model_mobilefacenet.pth`` come from the same folder,
  so another fixture set carries its own. Checked: the project's defaults against the official
  hyper-parameters, the forward of all six nets, the face embedding and face-ID distance, then
  three official iterations in ``--faithful`` mode: learning rates, all 30 loss terms, every
  iteration-1 gradient, the G-step outputs, and every state tensor (and its change since the
  start) after each iteration;
* translation fixtures (a ``full_mask`` entry): ``test.py`` of the official code on a face, with
  the weights ``photo2cartoon_weights.pt`` of the same folder: net input, float image, CAM logit,
  heatmap and B2A image through the project's Translator and generator, and the official uint8
  post-processing of the project's image against the official picture.

Each check is made at the README's gates (with its floors: the official code's own rounding
sensitivity) and bit for bit (the README: faithful mode reproduces every value exactly).

Kernels: as in test_parity_stargan, the numeric checks run in a child process (this file run as a
script) with oneDNN and ATen capped at AVX2, the kernels the fixtures were made with (variables
already set in the environment win); oneDNN reads the cap once, at its first convolution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import checks_from_child
from unpaired import load_translator
from unpaired.models.photo2cartoon import networks as p2c_networks
from unpaired.models.photo2cartoon.mobilefacenet import load_mobilefacenet
from unpaired.models.photo2cartoon.networks import build_generator, build_photo2cartoon
from unpaired.models.photo2cartoon.official import load_official, official_states
from unpaired.models.photo2cartoon.options import Photo2CartoonOptions, validate_photo2cartoon
from unpaired.models.photo2cartoon.recipe import Photo2CartoonRecipe
from unpaired.models.photo2cartoon.train import FaceIDLoss, face_crop
from unpaired.models.ugatit.options import resolve_n_dis
from unpaired.options import build as build_options
from unpaired.training.speed import resolve_speed

# the tree under test, for the child: src/unpaired/models/photo2cartoon/networks.py -> src
UNPAIRED_SRC = Path(p2c_networks.__file__).resolve().parents[3]

SHIPPED = Path(__file__).parent / "parity_fixtures" / "p2c"
FACE_ID_WEIGHTS = "model_mobilefacenet.pth"  # README: the face-ID stand-in, next to the fixtures
TRANSLATE_WEIGHTS = "photo2cartoon_weights.pt"  # README: the checkpoint test.py ran, next to its fixture
CPU = torch.device("cpu")
NETS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")
GENERATORS = NETS[:2]


# ----------------------------------------------------------------------------- fixture files


def fixture_folder() -> Path:
    return Path(os.environ.get("UNPAIRED_P2C_PARITY_DIR") or SHIPPED)


_LOADED: dict[Path, object] = {}


def load(path: Path):
    """A file of the folder, read once per process."""
    if path not in _LOADED:
        _LOADED[path] = torch.load(path, map_location="cpu", weights_only=True)
    return _LOADED[path]


def kind_of(path: Path) -> str | None:
    """"train", "translate", or None for a file that is not a fixture (a checkpoint)."""
    content = load(path)
    if isinstance(content, dict) and {"meta", "layouts", "iterations"} <= set(content):
        return "train"
    if isinstance(content, dict) and {"full_mask", "face_rgb", "meta"} <= set(content):
        return "translate"
    return None


def files_of_kind(kind: str) -> list[Path]:
    """The fixture files of one kind found at collection time (any name, any size)."""
    return [p for p in sorted(fixture_folder().glob("*.pt")) if kind_of(p) == kind]


def test_fixture_folder_holds_fixtures():
    """Every .pt is a fixture or a checkpoint a fixture names, and the files a fixture needs are
    there: a folder of unknown files would otherwise pass by running no parity test at all."""
    folder = fixture_folder()
    files = sorted(folder.glob("*.pt"))
    train, translate = files_of_kind("train"), files_of_kind("translate")
    assert train or translate, f"{folder} holds no photo2cartoon parity fixture"
    needed = {load(p)["meta"]["init_file"] for p in train} | ({TRANSLATE_WEIGHTS} if translate else set())
    if train:
        needed.add(FACE_ID_WEIGHTS)
    missing = sorted(n for n in needed if not (folder / n).is_file())
    assert not missing, f"{folder} lacks files its fixtures need: {missing}"
    unknown = [p.name for p in files if kind_of(p) is None and p.name not in needed]
    assert not unknown, f"{folder}: files in no known fixture format: {unknown}"


@pytest.fixture(scope="module", params=files_of_kind("train"), ids=lambda p: p.stem)
def train_file(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def train_results(train_file, tmp_path_factory) -> dict[str, list]:
    return checks_in_child("train", train_file, tmp_path_factory.mktemp("checks"))


@pytest.fixture(scope="module", params=files_of_kind("translate"), ids=lambda p: p.stem)
def translate_file(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def translate_results(translate_file, tmp_path_factory) -> dict[str, list]:
    return checks_in_child("translate", translate_file, tmp_path_factory.mktemp("checks"))


def checks_in_child(kind: str, path: Path, out_dir: Path) -> dict[str, list]:
    """Run ``child_main`` on one fixture in a fresh process with the fixtures' kernels; returns its
    checks by group. A failure inside it fails the test with the child's traceback."""
    checks = checks_from_child(__file__, kind, path, out_dir, UNPAIRED_SRC)
    return {group: [Check(**c) for c in items] for group, items in checks.items()}


# ----------------------------------------------------------------------------- README record format


def sample_index(n: int, samples: int, prime: int) -> torch.Tensor:
    return (torch.arange(samples, dtype=torch.int64) * prime) % n


def norms(t: torch.Tensor) -> torch.Tensor:
    d = t.detach().double().flatten()
    return torch.stack([d.abs().sum(), (d * d).sum()])


@dataclass(frozen=True)
class Fingerprint:
    """How a record stores a tensor: whole up to ``full_max`` elements, else ``samples`` values."""

    full_max: int = 2048
    samples: int = 512
    prime: int = 1_000_003


def unpack_many(p: dict, layout, fp: Fingerprint) -> dict[str, tuple]:
    """``{key: ("full", tensor) | ("sample", values, norms)}`` of a ``pack_many`` record (README)."""
    out, pos, j = {}, 0, 0
    for key, shape, sampled in layout:
        if sampled:
            out[key] = ("sample", p["flat"][pos:pos + fp.samples], p["norms"][j])
            pos += fp.samples
            j += 1
        else:
            n = math.prod(shape)
            out[key] = ("full", p["flat"][pos:pos + n].view(tuple(shape)))
            pos += n
    assert pos == p["flat"].numel(), "record and layout disagree"
    return out


def unpack(p: dict) -> tuple:
    return ("full", p["full"]) if "full" in p else ("sample", p["val"], p["norms"])


def rel(a, b) -> float:
    """max|a − b| / max|b| (README)."""
    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() if b.numel() else 0.0


def compare(ours: torch.Tensor, rec: tuple, fp: Fingerprint, init: torch.Tensor | None = None,
            keep: torch.Tensor | None = None):
    """(state error, delta error) of a tensor against its record; delta = change since ``init``.

    ``keep`` (a mask over the record's stored values) leaves out elements the README's Adam
    allowance excused; the norms of a sampled tensor, which include them, are then not compared.
    """
    ours = ours.detach().float()
    if rec[0] == "full":
        assert tuple(ours.shape) == tuple(rec[1].shape), f"shape {tuple(ours.shape)} != {tuple(rec[1].shape)}"
        mine, ref, base = ours, rec[1], init
        err_norms = 0.0
    else:
        idx = sample_index(ours.numel(), fp.samples, fp.prime)
        mine, ref = ours.flatten()[idx], rec[1]
        base = init.float().flatten()[idx] if init is not None else None
        n = norms(ours)
        err_norms = max(rel(n[0], rec[2][0]), rel(n[1], rec[2][1])) if keep is None else 0.0
    err = max(masked_rel(mine, ref, keep), err_norms)
    return err, (masked_rel(mine - base, ref - base, keep) if base is not None else None)


def masked_rel(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None) -> float:
    """``rel`` over the kept elements, still scaled by max|b| over all of them."""
    if keep is None:
        return rel(a, b)
    a, b = a.double().flatten(), b.double().flatten()
    diff = (a - b).abs()[keep.flatten()]
    return (diff.max() / b.abs().max().clamp_min(1e-12)).item() if diff.numel() else 0.0


# ----------------------------------------------------------------------------- checks


@dataclass
class Check:
    """One compared value: its README error, what the README allows, and whether it is bit-identical."""

    what: str
    err: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.err <= self.allowed

    @property
    def exact(self) -> bool:
        return self.err == 0.0


def gated(what: str, err: float, gate: float, floor_allowance: float = 0.0) -> Check:
    """README: an error passes at its gate, or within the official code's own floor allowance."""
    return Check(what, err, max(gate, floor_allowance))


def assert_within_tolerance(checks: list[Check]) -> None:
    assert checks, "nothing was compared"
    bad = sorted((c for c in checks if not c.ok), key=lambda c: -c.err / max(c.allowed, 1e-300))
    assert not bad, f"{len(bad)} of {len(checks)} values outside the README's gates, worst first:\n" + "\n".join(
        f"  {c.what}: error {c.err:.3g} > allowed {c.allowed:.3g}" for c in bad[:25])


def assert_bit_identical(checks: list[Check]) -> None:
    assert checks, "nothing was compared"
    bad = [c for c in checks if not c.exact]
    assert not bad, f"{len(bad)} of {len(checks)} values not bit-identical to the official run:\n" + "\n".join(
        f"  {c.what}: error {c.err:.3g}" for c in bad[:25])


def check_group(checks: list[Check], exact: bool) -> None:
    (assert_bit_identical if exact else assert_within_tolerance)(checks)


# ----------------------------------------------------------------------------- the project side


MODES = ("faithful", "speed")  # --faithful, and the default CPU speed options (training/speed.py)


def config_of(fx: dict, folder: Path, mode: str = "faithful") -> Photo2CartoonOptions:
    """README step 2: the project's defaults, sized as the fixture, in ``mode``, resolved for the CPU."""
    meta = fx["meta"]
    cfg = build_options(Photo2CartoonOptions, ("the fixture's meta", {
        "img_size": meta["img_size"], "ch": meta["ch"], "iters": meta["iteration"], "batch_size": meta["batch_size"],
        "face_id_weights": str(folder / FACE_ID_WEIGHTS), "faithful": mode == "faithful", "device": "cpu"}))
    cfg, _ = resolve_n_dis(cfg)
    validate_photo2cartoon(cfg)
    return resolve_speed(cfg, CPU)


def initial_states(fx: dict, folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The official initial checkpoint of the fixture (sha256-checked) in the project's layout."""
    meta = fx["meta"]
    path = folder / meta["init_file"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == meta["init_sha256"], f"{path.name} is not the checkpoint the fixture started from"
    return official_states(load(path))


def fresh_nets(cfg: Photo2CartoonOptions, states: dict) -> dict[str, torch.nn.Module]:
    """README step 3: the six nets holding ``states`` (strict), in train mode, speed options applied."""
    nets = build_photo2cartoon(cfg.arch)
    for name, net in nets.items():
        net.load_state_dict(states[name], strict=True)
        net.train()
    Photo2CartoonRecipe().accelerate(nets, cfg, CPU)
    return nets


def levels_to_input(levels: torch.Tensor) -> torch.Tensor:
    return levels.float() / 127.5 - 1


def forward_checks(fx: dict, folder: Path, cfg, states: dict, fp: Fingerprint) -> list[Check]:
    """README step 4: every net on batch 1 at the initial state; the face embedding and distance."""
    nets = fresh_nets(cfg, states)
    floors = fx["floors"]["forward"]
    x = {"A": levels_to_input(fx["inputs"]["real_A_levels"][0]), "B": levels_to_input(fx["inputs"]["real_B_levels"][0])}
    checks = []
    with torch.no_grad():
        for name in NETS:
            domain = "A" if name in ("genA2B", "disGA", "disLA") else "B"
            for part, mine, ref in zip(("out", "cam_logit", "heatmap"), nets[name](x[domain]), fx["forward"][name],
                                       strict=True):
                err, _ = compare(mine, ("full", ref), fp)
                checks.append(gated(f"forward {name}.{part}", err, 1e-5, 10 * floors[f"{name}.{part}"]))
        embedder = load_mobilefacenet(folder / FACE_ID_WEIGHTS).eval()
        err, _ = compare(embedder(face_crop(x["A"])), ("full", fx["forward"]["facenet_embedding_A"]), fp)
        checks.append(gated("forward facenet_embedding_A", err, 1e-5, 10 * floors["facenet_embedding_A"]))
        distance = FaceIDLoss(embedder)(x["A"], nets["genA2B"](x["A"])[0])
        err = rel(distance, fx["forward"]["facenet_cosine_distance"].double().mean())
        checks.append(gated("forward facenet_cosine_distance", err, 1e-5, 10 * floors["facenet_cosine_distance"]))
    return checks


def largest(values) -> float:
    return max((v for v in values if v is not None), default=0.0)


def step_with_outputs(trainer, real_A: torch.Tensor, real_B: torch.Tensor):
    """``trainer.step`` and the G-step outputs it computed (detached): the tensors its
    ``generator_step`` was given and filled in (the fakes, cycles, identities, D-on-fake outputs),
    which ``StepResult`` no longer carries. The math is the trainer's own; only its
    ``generator_step`` is looked at, through an instance attribute removed afterwards."""
    seen: dict[str, torch.Tensor] = {}
    generator_step = trainer.generator_step

    def recorded(tensors):
        losses = generator_step(tensors)
        seen.update(tensors)
        return losses

    trainer.generator_step = recorded
    try:
        res = trainer.step(real_A, real_B)
    finally:
        del trainer.generator_step
    return res, {k: v.detach() for k, v in seen.items()}


def training_checks(fx: dict, folder: Path, cfg, states: dict, fp: Fingerprint) -> list[Check]:
    """README step 5: three official iterations on fresh nets, compared after each.

    Outside faithful mode the README's Adam allowance applies to the iteration-1 deltas (see
    ``adam_allowance``); the elements it excuses, and the spectral-norm u, v of their layer,
    are left out of that net's states and deltas from then on.
    """
    nets = fresh_nets(cfg, states)
    trainer = Photo2CartoonRecipe().make_trainer(nets, cfg, nets)
    layouts, no_effect = fx["layouts"], {n: set(fx["no_effect"].get(n, ())) for n in NETS}
    real_A = [levels_to_input(t) for t in fx["inputs"]["real_A_levels"]]
    real_B = [levels_to_input(t) for t in fx["inputs"]["real_B_levels"]]
    grads = {n: unpack_many(fx["grads"][n], layouts["grad_" + n], fp) for n in NETS}
    keep: dict[tuple[str, str], torch.Tensor] = {}  # (net, key) -> elements still compared
    dropped: set[tuple[str, str]] = set()  # SN u, v of a layer with excused elements
    checks = []
    for k, rec in enumerate(fx["iterations"]):
        tag, first = f"it{k + 1}", k == 0
        floors = fx["floors"]["iterations"][k]
        trainer.begin_step(rec["step"])
        lrs = (("G", trainer.lr, rec["lr_G"]), ("D", trainer.D_optim.param_groups[0]["lr"], rec["lr_D"]))
        for side, lr, ref in lrs:
            checks.append(Check(f"{tag} lr_{side}", abs(lr - ref), 1e-12 * abs(ref)))
        res, res_outputs = step_with_outputs(trainer, real_A[k], real_B[k])

        assert set(res.losses) == set(rec["losses"]), f"{tag}: loss names differ: " \
            f"{sorted(set(res.losses) ^ set(rec['losses']))}"
        loss_group_floor = largest(floors["losses"].values())
        for name, ref in rec["losses"].items():
            err = rel(res.losses[name].double().mean(), ref.double().mean())
            allowance = 10 * floors["losses"][name] if first else loss_group_floor
            checks.append(gated(f"{tag} loss {name}", err, 1e-5 if first else 1e-3, allowance))

        if first:
            for name in NETS:
                params = dict(nets[name].named_parameters())
                with_grad = {key for key, p in params.items() if p.grad is not None}
                assert with_grad == set(grads[name]), f"{name}: parameters with a gradient differ from the " \
                    f"official: {sorted(with_grad ^ set(grads[name]))}"
                for key, r in grads[name].items():
                    if key in no_effect[name]:
                        continue
                    err, _ = compare(params[key].grad, r, fp)
                    checks.append(gated(f"{tag} grad {name}.{key}", err, 1e-5, 10 * fx["floors"]["grads"][name][key]))

        outputs = unpack_many(rec["outputs"], layouts["outputs"], fp)
        output_floor = largest(floors["outputs"].values())
        for name, r in outputs.items():
            err, _ = compare(res_outputs[name], r, fp)
            allowance = 10 * floors["outputs"][name] if first else output_floor
            checks.append(gated(f"{tag} output {name}", err, 1e-5 if first else 1e-3, allowance))

        for name in NETS:
            recs = unpack_many(rec["states"][name], layouts[name], fp)
            state = nets[name].state_dict()
            assert set(state) <= set(recs), f"{name}: state keys not in the record: {sorted(set(state) - set(recs))}"
            net_floors = floors["states"][name]
            state_floor = largest(f[0] for f in net_floors.values())
            delta_floor = largest(f[1] for f in net_floors.values())
            if first and not cfg.faithful:
                for key in grads[name]:
                    if key not in no_effect[name]:
                        checks += adam_allowance(name, key, state[key], recs[key], grads[name][key],
                                                 states[name][key], rec["lr_G"], fp, keep, dropped)
            for key, tensor in state.items():
                if key in no_effect[name] or (name, key) in dropped:
                    continue
                err, delta = compare(tensor, recs[key], fp, init=states[name][key], keep=keep.get((name, key)))
                checks.append(gated(f"{tag} state {name}.{key}", err, 1e-5 if first else 1e-3, state_floor))
                if not (first and (name, key) in keep):  # judged by adam_allowance
                    checks.append(gated(f"{tag} delta {name}.{key}", delta, 1e-3, delta_floor))
    return checks


ADAM_EPS = 1e-8
WEIGHT_DECAY = 1e-4


def adam_allowance(net: str, key: str, ours: torch.Tensor, rec: tuple, grad: tuple, init: torch.Tensor, lr: float,
                   fp: Fingerprint, keep: dict, dropped: set) -> list[Check]:
    """README: non-official arithmetic moves gradients at the 1e-6 level, and Adam's first step
    ``lr·g/(|g| + eps)`` amplifies that where ``|g|`` is within a few eps of zero. Per element,
    ``|Δours − Δofficial| ≤ 1e-3·max|Δofficial| + lr·eps·δg/(|g| + eps)²``, ``g = grad + 1e-4·θ0``,
    ``δg = 1e-5·max|grad|``. Elements that need the second term are excused: recorded in ``keep``
    (and their layer's SN u, v in ``dropped``) for the later comparisons. Returns one check
    (ratio of the worst element to its allowance) when the plain delta gate does not suffice.
    """
    if rec[0] == "full":
        mine, off, base, g_off = ours.float(), rec[1], init.float(), grad[1]
    else:
        idx = sample_index(ours.numel(), fp.samples, fp.prime)
        mine, off, base, g_off = ours.float().flatten()[idx], rec[1], init.float().flatten()[idx], grad[1]
    d_ours, d_off = (mine - base).double(), (off - base).double()
    plain = 1e-3 * d_off.abs().max().item()
    diff = (d_ours - d_off).abs()
    if diff.max().item() <= plain:
        return []
    g = g_off.double() + WEIGHT_DECAY * base.double()
    delta_g = 1e-5 * g_off.double().abs().max().item()
    allowance = plain + lr * ADAM_EPS * delta_g / (g.abs() + ADAM_EPS) ** 2
    excused = diff > plain
    keep[(net, key)] = ~excused
    if key.endswith("weight_orig"):
        layer = key[: -len("weight_orig")]
        dropped.update({(net, layer + "weight_u"), (net, layer + "weight_v")})
    worst = (diff / allowance).max().item()
    return [Check(f"it1 delta {net}.{key} (Adam allowance, {int(excused.sum())} elements excused)", worst, 1.0)]


def translate_checks(fx: dict, folder: Path, fp: Fingerprint) -> dict[str, list[Check]]:
    """README step 6: test.py's input, the project's translation and the official post-processing."""
    weights = folder / TRANSLATE_WEIGHTS
    meta = fx["meta"]
    arch, official = load_official(weights, meta["img_size"])  # arch: infer_photo2cartoon_arch of the file
    generators = {}
    for name in GENERATORS:  # the generator itself, for the CAM logit the Translator does not return
        generators[name] = build_generator(arch)
        generators[name].load_state_dict(official[name], strict=True)
    rgb = fx["face_rgb"].numpy()
    alphas = {"full_mask": np.full(rgb.shape[:2], 255, dtype=np.uint8), "soft_mask": fx["soft_alpha"].numpy()}
    groups = {}
    for direction, key, mask_name in (("A2B", "full_mask", "full_mask"), ("A2B", "soft_mask", "soft_mask"),
                                      ("B2A", "B2A_full_mask", "full_mask")):
        tr = load_translator(weights, direction=direction, device="cpu")
        assert (tr.model, tr.arch.light, tr.arch.ch, tr.img_size) == ("photo2cartoon", meta["light"], meta["ch"],
                                                                      meta["img_size"]), "checkpoint read wrongly"
        ref = fx[key]
        m = alphas[mask_name][:, :, None] / 255.0
        face = (rgb * m + (1 - m) * 255) / 127.5 - 1  # test.py: composited on white, float64
        x = torch.from_numpy(np.transpose(face[None], (0, 3, 1, 2)).astype(np.float32))
        checks = []
        if "input" in ref:
            checks.append(Check(f"{key} input", compare(x, unpack(ref["input"]), fp)[0], 1e-5))
        with torch.no_grad():
            image, heatmap = tr.translate_tensor(x)
            _, cam_logit, gen_heatmap = generators["gen" + direction](x)
        image_rec = unpack(ref["image"]) if isinstance(ref["image"], dict) else ("full", ref["image"])
        checks.append(Check(f"{key} image", compare(image, image_rec, fp)[0], 1e-5))
        checks.append(Check(f"{key} heatmap", compare(heatmap, ("full", ref["heatmap"]), fp)[0], 1e-5))
        checks.append(Check(f"{key} generator heatmap", compare(gen_heatmap, ("full", ref["heatmap"]), fp)[0], 1e-5))
        checks.append(Check(f"{key} cam_logit", compare(cam_logit, ("full", ref["cam_logit"]), fp)[0], 1e-5))
        if "cartoon_rgb" in ref:
            picture = official_picture(image[0], m)
            wrong = int((picture != ref["cartoon_rgb"].numpy()).sum())
            checks.append(Check(f"{key} cartoon_rgb (values off)", float(wrong), 0.0))
        groups[key] = checks
    return groups


def official_picture(image: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """test.py's post-processing of a float image [3,H,W]: ``(y + 1) * 127.5`` in float32, blended on
    white with the float64 mask, truncated to uint8 (RGB; test.py then converts to BGR)."""
    cartoon = np.transpose(image.numpy(), (1, 2, 0))
    cartoon = (cartoon + 1) * 127.5
    return (cartoon * mask + 255 * (1 - mask)).astype(np.uint8)


# ----------------------------------------------------------------------------- tests


def test_defaults_are_the_official_hyper_parameters(train_file):
    """README step 2: the project's photo2cartoon defaults equal the official train.py options."""
    fx = load(train_file)
    meta = fx["meta"]
    cfg = config_of(fx, train_file.parent)
    assert (cfg.arch.light, cfg.lr, cfg.adv_weight, cfg.cycle_weight, cfg.identity_weight, cfg.cam_weight,
            cfg.face_id_weight, cfg.rho_clipper, cfg.w_clipper, cfg.decay_flag, cfg.arch.n_res) == \
        (meta["light"], meta["lr"], meta["adv_weight"], meta["cycle_weight"], meta["identity_weight"],
         meta["cam_weight"], meta["faceid_weight"], meta["rho_clipper"], meta["w_clipper"], meta["decay_flag"],
         meta["n_res"])
    assert cfg.weight_decay == 1e-4
    arch = cfg.arch
    assert (arch.global_layers, arch.local_layers) == (7, 5)
    assert (cfg.precision, cfg.fused_adam, cfg.sn_outputs, cfg.compile, cfg.channels_last) == \
        ("fp32", False, False, "off", False), "faithful mode must compute the official way"
    nets = fresh_nets(cfg, initial_states(fx, train_file.parent))
    trainer = Photo2CartoonRecipe().make_trainer(nets, cfg, nets)
    for optim in (trainer.G_optim, trainer.D_optim):
        group = optim.param_groups[0]
        assert (group["betas"], group["eps"], group["weight_decay"], group["lr"]) == ((0.5, 0.999), 1e-8, 1e-4,
                                                                                      meta["lr"])
        assert not group.get("fused") and not group.get("foreach"), "faithful mode uses the per-tensor Adam loop"
    assert trainer.face_id is not None, "the face-ID loss must be on with model_mobilefacenet.pth"


# faithful mode: the README's gates and bit for bit; the default speed mode: the gates (with the Adam allowance)
MODE_CHECKS = [("faithful", False), ("faithful", True), ("speed", False)]
MODE_IDS = ["faithful-readme_gates", "faithful-bit_identical", "speed-readme_gates"]


@pytest.mark.parametrize(("mode", "exact"), MODE_CHECKS, ids=MODE_IDS)
def test_forward_of_all_six_nets_and_face_id(train_results, mode, exact):
    check_group(train_results[f"forward/{mode}"], exact)


@pytest.mark.parametrize(("mode", "exact"), MODE_CHECKS, ids=MODE_IDS)
def test_three_training_iterations(train_results, mode, exact):
    """lr, 30 losses, iteration-1 gradients, G-step outputs, all states and deltas, per iteration."""
    check_group(train_results[f"train/{mode}"], exact)


@pytest.mark.parametrize("exact", [False, True], ids=["readme_gates", "bit_identical"])
def test_translation_as_official_test_py(translate_results, exact):
    """Full and soft mask A2B and the B2A forward; the official picture exactly in both cases."""
    assert set(translate_results) == {"full_mask", "soft_mask", "B2A_full_mask"}
    for checks in translate_results.values():
        check_group(checks, exact)


def test_face_png_is_the_fixture_face(translate_file):
    """face.png (when shipped) holds the pixels the translation fixture ran on."""
    png = translate_file.parent / "face.png"
    if not png.is_file():
        pytest.skip("no face.png next to this translation fixture")
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert np.array_equal(pixels, load(translate_file)["face_rgb"].numpy())


# ----------------------------------------------------------------------------- the child process


def child_main(kind: str, path: str, out: str) -> None:
    """Compute every numeric check of one fixture file, at one thread, and write them as JSON."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    path = Path(path)
    fx = load(path)
    if kind == "train":
        fp = Fingerprint(**fx["meta"]["fingerprint"])
        states = initial_states(fx, path.parent)
        groups = {}
        for mode in MODES:
            cfg = config_of(fx, path.parent, mode)
            groups[f"forward/{mode}"] = forward_checks(fx, path.parent, cfg, states, fp)
            groups[f"train/{mode}"] = training_checks(fx, path.parent, cfg, states, fp)
    else:
        groups = translate_checks(fx, path.parent, Fingerprint())
    Path(out).write_text(json.dumps({g: [dataclasses.asdict(c) for c in cs] for g, cs in groups.items()}))


if __name__ == "__main__":
    child_main(*sys.argv[1:])
