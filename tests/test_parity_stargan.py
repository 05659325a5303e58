"""Parity of StarGAN v2 with the official clovaai/stargan-v2 code, against golden fixtures it produced.

Reads every ``*.pt`` in ``$UNPAIRED_STARGAN_PARITY_DIR`` (default: the copies in
tests/parity_fixtures/stargan, whose README defines the format, the replay and the tolerances)
and, per fixture, checks:

* training fixtures (``kind == "train"``): parameter layout and counts against the official
  state dicts, forward outputs of G, F, E, D and the EMA nets at the initial state (and after
  training where stored), the face masks, then three official iterations free-running and
  replayed (each iteration from the recorded state before it): every loss term and total,
  every gradient each optimiser saw, every parameter, EMA and Adam tensor after each
  iteration, the per-iteration updates, and λ_ds after training;
* full-size fixtures (``kind == "full"``): the unnarrowed official architectures (keys, shapes,
  parameter counts) and their forward outputs with recipe weights, FAN heatmaps and masks.

Each check is made twice: at the README's tolerances, and bit for bit (today's code reproduces
the official numbers exactly; the README lists the few values that cannot be bit-equal: λ_ds is
held as float32, and the official λ_ds subtraction leaves a 2e-16 residue).

Kernels. The fixtures were made at one thread on an AVX2 CPU. On an AVX-512 CPU oneDNN picks other
convolution kernels, which moves the results by float rounding (1e-7), enough to break bit
equality and, through Adam's sign-like first step, the README's 1e-5 gate on a zero-initialised
bias. The numeric checks therefore run in a child process (this file run as a script) with
oneDNN and ATen capped at AVX2 (``conftest.FIXTURE_KERNELS``; variables already set in the environment win):
oneDNN reads the cap once, at its first convolution, so it cannot be set inside a pytest
process that has run other tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import checks_from_child
from unpaired.models.stargan_v2 import networks as stargan_networks
from unpaired.models.stargan_v2 import train as stargan_train
from unpaired.models.stargan_v2.data import StarGANv2Batch
from unpaired.models.stargan_v2.fan import load_fan
from unpaired.models.stargan_v2.networks import (
    EMA_NETS,
    EMA_SUFFIX,
    TRAINED_NETS,
    Discriminator,
    build_stargan_v2,
    build_translation_nets,
)
from unpaired.models.stargan_v2.options import StarGANv2Arch, StarGANv2Options
from unpaired.models.stargan_v2.train import StarGANv2Trainer, ds_weight
from unpaired.options import build as build_options

# the tree under test, for the child: src/unpaired/models/stargan_v2/networks.py -> src
UNPAIRED_SRC = Path(stargan_networks.__file__).resolve().parents[3]

SHIPPED = Path(__file__).parent / "parity_fixtures" / "stargan"
FORMAT = "stargan_v2_parity/1"
BATCH_FIELDS = StarGANv2Batch._fields  # x_src, y_src, x_ref, x_ref2, y_ref, z_trg, z_trg2
UPDATES = {"D/latent": ("discriminator",), "D/ref": ("discriminator",),
           "G/latent": ("generator", "mapping_network", "style_encoder"), "G/ref": ("generator",)}


# ----------------------------------------------------------------------------- fixture files


def fixture_folder() -> Path:
    return Path(os.environ.get("UNPAIRED_STARGAN_PARITY_DIR") or SHIPPED)


@functools.cache
def load(path: Path) -> dict:
    """A fixture file, read once per session (several module fixtures share it)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def files_of_kind(kind: str) -> list[Path]:
    """The fixture files of one kind found at collection time (any name, any seed or size)."""
    return [p for p in sorted(fixture_folder().glob("*.pt"))
            if isinstance(load(p), dict) and load(p).get("format") == FORMAT and load(p).get("kind") == kind]


def test_fixture_folder_holds_fixtures():
    """An empty or mistyped folder would otherwise pass by running no parity test at all."""
    files = sorted(fixture_folder().glob("*.pt"))
    assert files, f"{fixture_folder()} holds no *.pt fixture"
    for path in files:
        fx = load(path)
        assert isinstance(fx, dict) and fx.get("format") == FORMAT, f"{path.name} is not a {FORMAT} file"
        assert fx.get("kind") in ("train", "full"), f"{path.name}: unknown kind {fx.get('kind')!r}"
    assert files_of_kind("train"), "no training fixture: losses, gradients and states would go unchecked"


@pytest.fixture(scope="module", params=files_of_kind("train"), ids=lambda p: p.stem)
def train_file(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def fx(train_file) -> dict:
    return load(train_file)


@pytest.fixture(scope="module")
def train_results(train_file, tmp_path_factory) -> dict[str, list]:
    """All numeric checks of one training fixture, computed once in a child process."""
    return checks_in_child("train", train_file, tmp_path_factory.mktemp("checks"))


@pytest.fixture(scope="module", params=files_of_kind("full"), ids=lambda p: p.stem)
def full_file(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def fx_full(full_file) -> dict:
    return load(full_file)


@pytest.fixture(scope="module")
def full_results(full_file, tmp_path_factory) -> dict[str, list]:
    return checks_in_child("full", full_file, tmp_path_factory.mktemp("checks"))


def checks_in_child(kind: str, path: Path, out_dir: Path) -> dict[str, list]:
    """Run ``child_main`` on one fixture in a fresh process with the fixtures' kernels (see the
    module docstring); returns its checks by group. A failure inside (a missing key, a wrong
    shape, a regenerated tensor that differs) fails the test with the child's traceback."""
    checks = checks_from_child(__file__, kind, path, out_dir, UNPAIRED_SRC)
    return {group: [Check(**c) for c in items] for group, items in checks.items()}


@contextlib.contextmanager
def official_numerics() -> Iterator[None]:
    """One intra-op thread and deterministic kernels, as the fixtures were made (README: at other
    thread counts even the official code does not reproduce itself bit for bit)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


# ----------------------------------------------------------------------------- README definitions


def recipe_tensor(key: str, shape, seed: int) -> torch.Tensor:
    """The README's reproducible weight for one state-dict entry (float32, CPU generator)."""
    g = torch.Generator().manual_seed(int(seed))
    shape = tuple(int(s) for s in shape)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    if leaf == "weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def checksum(t: torch.Tensor) -> tuple[float, float]:
    return float(t.double().sum()), float(t.double().abs().sum())


def require_checksum(t: torch.Tensor, stored, what: str) -> None:
    """Stop when a regenerated tensor differs from the one that made the file: this torch's CPU
    generator is then not the fixtures', and nothing after it would mean anything."""
    for a, b in zip(checksum(t), stored, strict=True):
        if abs(a - b) > 1e-9 * max(1.0, abs(b)):
            pytest.fail(f"regenerated {what} has checksum {checksum(t)}, the fixture {tuple(stored)}: this torch's "
                        f"random generator differs from the one that made the fixture")


def recipe_state(entries, checksums: dict | None = None, skip: Callable[[str], bool] = lambda key: False) -> dict:
    """``{key: tensor}`` from recipe entries ``(key, shape, seed, scale)``, checked against ``checksums``."""
    state = {}
    for key, shape, seed, scale in entries:
        if skip(key):
            continue
        t = recipe_tensor(key, shape, seed)
        t = t if scale == 1.0 else t * scale
        if checksums is not None:
            require_checksum(t, checksums[key], f"recipe tensor {key}")
        state[key] = t
    return state


def make_inputs(cfg: dict, iters: int) -> list[dict[str, torch.Tensor]]:
    """The README's generated batches (keyword arguments evaluated left to right = draw order)."""
    g = torch.Generator().manual_seed(cfg["input_seed"])
    b, s, nd, zd = cfg["batch_size"], cfg["img_size"], cfg["num_domains"], cfg["latent_dim"]

    def img():
        return torch.rand(b, 3, s, s, generator=g) * 2 - 1

    return [dict(x_src=img(), y_src=torch.randint(0, nd, (b,), generator=g),
                 x_ref=img(), x_ref2=img(), y_ref=torch.randint(0, nd, (b,), generator=g),
                 z_trg=torch.randn(b, zd, generator=g), z_trg2=torch.randn(b, zd, generator=g))
            for _ in range(iters)]


_BATCHES: dict[int, list[dict[str, torch.Tensor]]] = {}


def batches_of(fx: dict) -> list[dict[str, torch.Tensor]]:
    """Stored batches, or regenerated ones checked against the stored checksums (made once per file)."""
    if "inputs" in fx:
        return fx["inputs"]
    if id(fx) in _BATCHES:
        return _BATCHES[id(fx)]
    batches = make_inputs(fx["config"], fx["iters"])
    for i, (batch, sums) in enumerate(zip(batches, fx["inputs_checksums"], strict=True)):
        assert list(batch) == list(BATCH_FIELDS)
        for field in BATCH_FIELDS:
            require_checksum(batch[field], sums[field], f"input batch {i + 1} {field}")
    _BATCHES[id(fx)] = batches
    return batches


def batch_of(fx: dict, it: int) -> StarGANv2Batch:
    """Batch ``it`` (1-based) as the project's batch type, cloned so no step can alter the fixture."""
    b = batches_of(fx)[it - 1]
    return StarGANv2Batch(*(b[k].clone() for k in BATCH_FIELDS))


def is_unread_official_key(key: str, net: str, w_hpf: float) -> bool:
    """The two official tensors the official forward never reads and the project does not keep."""
    if net == "generator" and key == "hpf.filter":
        return True
    return net == "generator" and w_hpf > 0 and re.fullmatch(r"decode\.\d+\.conv1x1\.weight", key) is not None


# ----------------------------------------------------------------------------- building the project side


@contextlib.contextmanager
def mapping_width(width: int) -> Iterator[None]:
    """The README's width shim: the project's mapping-network width constant, while nets are built."""
    before = stargan_networks.MAPPING_WIDTH
    stargan_networks.MAPPING_WIDTH = width
    try:
        yield
    finally:
        stargan_networks.MAPPING_WIDTH = before


def config_of(fx: dict, fan_weights: str | None) -> StarGANv2Options:
    """The project options of a training fixture, from its ``config`` and official option values
    (flat names, the architecture's routed into ``opts.arch``; ``build`` checks each value)."""
    c, a = fx["config"], fx["official_args"]
    cfg = build_options(StarGANv2Options, ("the fixture's config", dict(
        img_size=c["img_size"], style_dim=c["style_dim"], latent_dim=c["latent_dim"], max_conv_dim=c["max_conv_dim"],
        w_hpf=c["w_hpf"], fan_weights=fan_weights, domains=[f"domain{i}" for i in range(c["num_domains"])],
        lambda_reg=c["lambda_reg"], lambda_cyc=c["lambda_cyc"], lambda_sty=c["lambda_sty"],
        lambda_ds=c["lambda_ds"], ds_iter=c["ds_iter"], iters=fx["iters"], batch_size=c["batch_size"],
        lr=a["lr"], f_lr=a["f_lr"], beta1=a["beta1"], beta2=a["beta2"], weight_decay=a["weight_decay"],
        seed=c["seed"])))
    cfg.arch.check()  # what the networks can be built for (training data, absent here, is checked by the recipe)
    return cfg


def write_fan_weights(entries, checksums, path: Path) -> Path:
    """The official ``wing.ckpt`` format holding the fixture's recipe FAN."""
    torch.save({"state_dict": recipe_state(entries, checksums)}, path)
    return path


def load_official(net: torch.nn.Module, official: dict, name: str, w_hpf: float) -> None:
    """Load an official state dict, leaving out only the README's unread official tensors."""
    ours = net.state_dict()
    skipped = {k for k in official if k not in ours}
    assert all(is_unread_official_key(k, name, w_hpf) for k in skipped), \
        f"{name}: official tensors missing in the project: {sorted(skipped)}"
    net.load_state_dict({k: v for k, v in official.items() if k in ours}, strict=True)


@dataclass
class Built:
    nets: dict
    trainer: StarGANv2Trainer
    fan: object
    cfg: object


def build(fx: dict, tmp_dir: Path) -> Built:
    """Project nets holding the official initial state (EMA nets: the official EMA init), and a trainer."""
    c = fx["config"]
    fan_weights = None
    if c["w_hpf"] > 0:
        fan_weights = str(write_fan_weights(fx["fan_recipe"], fx["fan_checksums"], tmp_dir / "wing.ckpt"))
    cfg = config_of(fx, fan_weights)
    with mapping_width(c["mapping_width"]):
        nets = build_stargan_v2(cfg.arch, cfg.seed)
    for name in TRAINED_NETS:
        load_official(nets[name], fx["init"]["nets"][name], name, c["w_hpf"])
    for name in EMA_NETS:
        load_official(nets[name + EMA_SUFFIX], fx["init"]["ema"][name], name, c["w_hpf"])
    fan = load_fan(fan_weights) if fan_weights else None
    return Built(nets, StarGANv2Trainer(nets, cfg, fan=fan), fan, cfg)


# ----------------------------------------------------------------------------- comparisons


@dataclass
class Check:
    """One compared value: its error, what the README allows, and whether it is bit-identical."""

    what: str
    err: float
    allowed: float
    exact: bool
    bit_exact_expected: bool = True

    @property
    def ok(self) -> bool:
        return self.err <= self.allowed


def tensor_check(what: str, ours: torch.Tensor, ref: torch.Tensor, tol: float, scale: float | None = None,
                 absolute: float | None = None) -> Check:
    """``max|ours − ref| ≤ tol · scale`` (scale: max|ref| unless given), or ``≤ absolute``; float64."""
    ours, ref = ours.detach(), ref.detach()
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != official {tuple(ref.shape)}"
    exact = ours.dtype == ref.dtype and torch.equal(ours, ref)
    diff = (ours.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    if absolute is None:
        scale = ref.double().abs().max().item() if scale is None else scale
        absolute = tol * scale
    return Check(what, diff, absolute, exact)


def scalar_check(what: str, ours: float, ref: float, tol: float, bit_exact_expected: bool = True) -> Check:
    return Check(what, abs(ours - ref), tol * abs(ref), ours == ref, bit_exact_expected)


def assert_within_tolerance(checks: list[Check]) -> None:
    assert checks, "nothing was compared"
    bad = sorted((c for c in checks if not c.ok), key=lambda c: -c.err / max(c.allowed, 1e-300))
    assert not bad, f"{len(bad)} of {len(checks)} values outside the README's tolerance, worst first:\n" + "\n".join(
        f"  {c.what}: |diff| {c.err:.3g} > allowed {c.allowed:.3g}" for c in bad[:25])


def assert_bit_identical(checks: list[Check]) -> None:
    assert checks, "nothing was compared"
    bad = [c for c in checks if c.bit_exact_expected and not c.exact]
    assert not bad, f"{len(bad)} of {len(checks)} values not bit-identical to the official run:\n" + "\n".join(
        f"  {c.what}: |diff| {c.err:.3g}" for c in bad[:25])


# ----------------------------------------------------------------------------- forward outputs


def forward_outputs(nets: dict, stored: dict, batch: StarGANv2Batch, masks, ema: bool) -> dict[str, torch.Tensor]:
    """The README's forward calls; G and D read the stored official upstream outputs, so each
    module is checked on its own inputs. ``ema`` uses the EMA copies of G, F and E."""
    def net(name):
        return nets[name + EMA_SUFFIX] if ema and name in EMA_NETS else nets[name]

    calls = {
        "F(z_trg,y_trg)": lambda: net("mapping_network")(batch.z_trg, batch.y_ref),
        "E(x_ref,y_trg)": lambda: net("style_encoder")(batch.x_ref, batch.y_ref),
        "E(x_src,y_src)": lambda: net("style_encoder")(batch.x_src, batch.y_src),
        "G(x_src,F(z_trg,y_trg))": lambda: net("generator")(batch.x_src, stored["F(z_trg,y_trg)"], masks=masks),
        "G(x_src,E(x_ref,y_trg))": lambda: net("generator")(batch.x_src, stored["E(x_ref,y_trg)"], masks=masks),
        "D(x_src,y_src)": lambda: nets["discriminator"](batch.x_src, batch.y_src),
        "D(G(x_src,F(z_trg,y_trg)),y_trg)": lambda: nets["discriminator"](stored["G(x_src,F(z_trg,y_trg))"],
                                                                          batch.y_ref),
    }
    unknown = sorted(set(stored) - set(calls))
    assert not unknown, f"fixture holds forward outputs this test does not know how to compute: {unknown}"
    with torch.no_grad():
        return {key: calls[key]() for key in stored}


def forward_checks(nets: dict, where: dict, batch: StarGANv2Batch, masks, prefix: str, tol: float) -> list[Check]:
    checks = []
    for key, ema in (("forward", False), ("forward_ema", True)):
        if key in where:
            ours = forward_outputs(nets, where[key], batch, masks, ema)
            checks += [tensor_check(f"{prefix} {key} {call}", ours[call], ref, tol) for call, ref in where[key].items()]
    return checks


# ----------------------------------------------------------------------------- training


@contextlib.contextmanager
def recording(trainer: StarGANv2Trainer) -> Iterator[dict]:
    """Record loss totals and the gradient each optimiser step sees, without changing the math.

    ``step()`` looks ``compute_d_loss``/``compute_g_loss`` up at call time, so wrapping the module
    attributes reads the totals; each optimiser's ``step`` is wrapped to copy ``p.grad`` first.
    """
    log = {"update": None, "totals": {}, "grads": {}}
    originals = {"compute_d_loss": stargan_train.compute_d_loss, "compute_g_loss": stargan_train.compute_g_loss}

    def wrap(name: str, side: str):
        def wrapped(*args, **kwargs):
            branch = "latent" if ("z_trg" in kwargs or "z_trgs" in kwargs) else "ref"
            log["update"] = f"{side}/{branch}"
            loss, terms = originals[name](*args, **kwargs)
            log["totals"][f"{side}/{branch}_total"] = loss.item()
            return loss, terms
        return wrapped

    def wrap_step(net: str, optim: torch.optim.Optimizer):
        step, names = optim.step, dict(trainer.raw[net].named_parameters())

        def wrapped(*args, **kwargs):
            grads = log["grads"].setdefault(log["update"], {})
            assert net not in grads, f"{net} stepped twice in {log['update']}"
            grads[net] = {k: p.grad.detach().clone() for k, p in names.items() if p.grad is not None}
            return step(*args, **kwargs)
        return wrapped

    stargan_train.compute_d_loss = wrap("compute_d_loss", "D")
    stargan_train.compute_g_loss = wrap("compute_g_loss", "G")
    saved_steps = {}
    for net, optim in trainer.optims.items():
        saved_steps[net] = optim.step
        optim.step = wrap_step(net, optim)
    try:
        yield log
    finally:
        for name, fn in originals.items():
            setattr(stargan_train, name, fn)
        for net, optim in trainer.optims.items():
            optim.step = saved_steps[net]


def snapshot(built: Built) -> dict:
    """Everything a record holds, from the project: losses filled in by the caller."""
    nets, trainer = built.nets, built.trainer
    adam = {}
    for net, optim in trainer.optims.items():
        adam[net] = {k: {"exp_avg_sq": optim.state[p]["exp_avg_sq"].clone(), "step": float(optim.state[p]["step"])}
                     for k, p in trainer.raw[net].named_parameters() if optim.state.get(p)}
    return {"nets": {n: {k: v.clone() for k, v in nets[n].state_dict().items()} for n in TRAINED_NETS},
            "ema": {n: {k: v.clone() for k, v in nets[n + EMA_SUFFIX].state_dict().items()} for n in EMA_NETS},
            "adam": adam}


def run_iteration(built: Built, fx: dict, it: int) -> dict:
    """Official iteration ``it`` (1-based) on batch ``it``: losses, grads and states afterwards."""
    with recording(built.trainer) as log:
        built.trainer.begin_step(it)
        result = built.trainer.step(batch_of(fx, it))
    losses = {**{k: v.item() for k, v in result.losses.items()}, **log["totals"]}
    return {"losses": losses, "grads": log["grads"], **snapshot(built)}


def grad_free(fx: dict) -> dict[str, set[str]]:
    """README: parameters whose official iteration-1 gradient is nonzero but ≤ 1e-4 · the network's
    max|grad| in every update (e.g. conv biases ahead of an instance norm: true gradient 0)."""
    out: dict[str, set[str]] = {}
    grads = fx["records"][0]["grads"]
    for net in TRAINED_NETS:
        per_update = [g[net] for g in grads.values() if net in g]
        free = set()
        for key in per_update[0]:
            small = all(g[key].abs().max() <= 1e-4 * max(t.abs().max() for t in g.values()) for g in per_update)
            if small and any(g[key].abs().max() > 0 for g in per_update):
                free.add(key)
        out[net] = free
    return out


def adam_bound(cfg, net: str, t0: int, t1: int) -> float:
    """README: 2 · Σ_{t=t0+1..t1} lr · sqrt((1 − β2^t)/(1 − β2)), the most Adam can move a weight."""
    lr = cfg.f_lr if net == "mapping_network" else cfg.lr
    b2 = cfg.beta2
    return 2 * sum(lr * math.sqrt((1 - b2 ** t) / (1 - b2)) for t in range(t0 + 1, t1 + 1))


ADAM_STEPS_PER_ITER = {"generator": 2, "mapping_network": 1, "style_encoder": 1, "discriminator": 2}


def floored_scales(tensors: dict[str, torch.Tensor], floor: bool) -> dict[str, float]:
    """max|official| per tensor; from iteration 2 on floored at 1 % of the network's largest (README)."""
    scales = {k: t.double().abs().max().item() if t.numel() else 0.0 for k, t in tensors.items()}
    if floor and scales:
        least = 0.01 * max(scales.values())
        scales = {k: max(s, least) for k, s in scales.items()}
    return scales


def iteration_checks(fx: dict, built: Built, it: int, ours: dict, before_ours: dict, before_ref: dict,
                     t0_steps: int, mode: str) -> list[Check]:
    """Compare one iteration's project values with ``records[it-1]`` at the README's tolerances.

    ``before_*`` are the (nets, ema) states before the iteration on each side, for the updates;
    ``t0_steps`` is the number of Adam iterations both sides shared before the run diverged
    (0 free-running, it − 1 in the replay), for the grad-free bound.
    """
    rec, cfg = fx["records"][it - 1], built.cfg
    first = it == 1
    tol_state, tol_grad = (1e-5, 1e-5) if first else (1e-3, 1e-2)
    tag = f"{mode} it{it}"
    free = grad_free(fx)
    checks = []

    assert set(ours["losses"]) == set(rec["losses"]), \
        f"{tag}: loss terms differ: {sorted(set(ours['losses']) ^ set(rec['losses']))}"
    for name, value in rec["losses"].items():
        if name == "G/lambda_ds":  # held as float32 by the project (README): bit-equal once rounded so
            check = scalar_check(f"{tag} loss {name}", ours["losses"][name], value, tol_state)
            check.exact = ours["losses"][name] == float(np.float32(value))
            checks.append(check)
        else:
            checks.append(scalar_check(f"{tag} loss {name}", ours["losses"][name], value, tol_state))

    if rec["grads"]:
        assert set(ours["grads"]) == set(rec["grads"]) == set(UPDATES), f"{tag}: updates {sorted(ours['grads'])}"
        for update, per_net in rec["grads"].items():
            assert set(ours["grads"][update]) == set(per_net) == set(UPDATES[update]), \
                f"{tag} {update}: stepped nets {sorted(ours['grads'][update])}"
            for net, grads in per_net.items():
                assert set(ours["grads"][update][net]) == set(grads), f"{tag} {update} {net}: gradient keys differ"
                scales = floored_scales(grads, floor=not first)
                net_max = max(scales.values())
                for key, ref in grads.items():
                    scale = net_max if key in free[net] else scales[key]
                    checks.append(tensor_check(f"{tag} grad {update} {net}.{key}", ours["grads"][update][net][key],
                                               ref, tol_grad, scale))

    t1_iters = it
    for group, names in (("nets", TRAINED_NETS), ("ema", EMA_NETS)):
        for net in names:
            ref_state, our_state = rec[group][net], ours[group][net]
            kept = {k for k in ref_state if not is_unread_official_key(k, net, cfg.arch.w_hpf)}
            assert set(our_state) == kept, f"{tag} {group} {net}: keys differ"
            keys = list(our_state)
            ref_upd = {k: ref_state[k] - before_ref[group][net][k] for k in keys}
            our_upd = {k: our_state[k] - before_ours[group][net][k] for k in keys}
            state_scales = floored_scales({k: ref_state[k] for k in keys}, floor=not first)
            upd_scales = floored_scales(ref_upd, floor=not first)
            bound = adam_bound(cfg, net, t0_steps * ADAM_STEPS_PER_ITER[net], t1_iters * ADAM_STEPS_PER_ITER[net])
            for key in keys:
                name = f"{tag} {group} {net}.{key}"
                if key in free[net]:
                    checks.append(tensor_check(name, our_state[key], ref_state[key], 0, absolute=bound))
                    checks.append(tensor_check(f"{name} update", our_upd[key], ref_upd[key], 0, absolute=bound))
                else:
                    checks.append(tensor_check(name, our_state[key], ref_state[key], tol_state, state_scales[key]))
                    checks.append(tensor_check(f"{name} update", our_upd[key], ref_upd[key], 1e-2, upd_scales[key]))

    for net, params in rec["adam"].items():
        assert set(ours["adam"][net]) == set(params), f"{tag} adam {net}: parameter names differ"
        scales = floored_scales({k: v["exp_avg_sq"] for k, v in params.items()}, floor=not first)
        net_max = max(scales.values())
        for key, ref in params.items():
            mine = ours["adam"][net][key]
            # exp_avg_sq holds squared gradients: grad-free ones on the network's scale, as their gradients
            scale = net_max if key in free[net] else scales[key]
            checks.append(tensor_check(f"{tag} adam {net}.{key} exp_avg_sq", mine["exp_avg_sq"], ref["exp_avg_sq"],
                                       tol_grad, scale))
            checks.append(Check(f"{tag} adam {net}.{key} step", abs(mine["step"] - ref["step"]), 0.0,
                                mine["step"] == ref["step"]))
    return checks


def init_states(fx: dict) -> dict:
    return {"nets": fx["init"]["nets"], "ema": fx["init"]["ema"]}


def free_running_checks(fx: dict, tmp_dir: Path) -> list[Check]:
    """Three official iterations from the initial state, compared with the records as they come."""
    with official_numerics():
        built = build(fx, tmp_dir)
        checks, before_ours, before_ref = [], snapshot(built), init_states(fx)
        for it in range(1, fx["iters"] + 1):
            ours = run_iteration(built, fx, it)
            checks += iteration_checks(fx, built, it, ours, before_ours, before_ref, 0, "free-running")
            before_ours, before_ref = ours, fx["records"][it - 1]
        final = fx["final"]
        lam = ds_weight(fx["iters"] + 1, built.cfg.lambda_ds, built.cfg.ds_iter)
        checks.append(Check("lambda_ds after training", abs(lam - final["lambda_ds_after"]),
                            1e-12 * built.cfg.lambda_ds, lam == final["lambda_ds_after"],
                            bit_exact_expected=False))  # official residue (README)
        batch = batch_of(fx, fx["iters"])
        masks = built.fan.masks(batch.x_src) if built.fan is not None else None
        checks += forward_checks(built.nets, final, batch, masks, "final", 1e-3)
    return checks


def replay_checks(fx: dict, tmp_dir: Path) -> list[Check]:
    """README 'Replay': each iteration from the recorded official state before it, so that
    differences cannot compound across iterations."""
    with official_numerics():
        built = build(fx, tmp_dir)
        checks, before = [], snapshot(built)
        for it in range(1, fx["iters"] + 1):
            if it >= 2:
                load_record(built, fx["records"][it - 2])
                before = snapshot(built)
            ours = run_iteration(built, fx, it)
            before_ref = init_states(fx) if it == 1 else fx["records"][it - 2]
            checks += iteration_checks(fx, built, it, ours, before, before_ref, it - 1, "replay")
    return checks


def load_record(built: Built, rec: dict) -> None:
    """Nets, EMA nets and Adam's ``exp_avg_sq`` from an official record (step counters already agree)."""
    w_hpf = built.cfg.arch.w_hpf
    for name in TRAINED_NETS:
        load_official(built.nets[name], rec["nets"][name], name, w_hpf)
    for name in EMA_NETS:
        load_official(built.nets[name + EMA_SUFFIX], rec["ema"][name], name, w_hpf)
    for net, optim in built.trainer.optims.items():
        for key, p in built.trainer.raw[net].named_parameters():
            state = optim.state[p]
            assert float(state["step"]) == rec["adam"][net][key]["step"], f"{net}.{key}: Adam step counters differ"
            state["exp_avg_sq"].copy_(rec["adam"][net][key]["exp_avg_sq"])


# ----------------------------------------------------------------------------- tests: training fixtures


def test_parameter_layout_matches_official(fx, tmp_path):
    """Same keys and shapes as the official state dicts (bar the README's two unread kinds),
    the same parameter counts, the official high-pass filter, and the official hyper-parameters."""
    built = build(fx, tmp_path)
    w_hpf = fx["config"]["w_hpf"]
    for name in TRAINED_NETS:
        official = dict(fx["net_keys"][name])
        ours = {k: tuple(v.shape) for k, v in built.nets[name].state_dict().items()}
        kept = {k: tuple(s) for k, s in official.items() if not is_unread_official_key(k, name, w_hpf)}
        assert ours == kept, f"{name}: keys or shapes differ: {sorted(set(ours.items()) ^ set(kept.items()))}"
        assert list(ours) == list(kept), f"{name}: state-dict order differs from the official"
        n_params = sum(p.numel() for p in built.nets[name].parameters())
        official_params = sum(math.prod(s) for k, s in kept.items())  # the nets have no buffers
        assert n_params == official_params, f"{name}: {n_params} parameters, official {official_params}"
    if w_hpf > 0:
        assert torch.equal(built.nets["generator"].hpf.filter, fx["init"]["nets"]["generator"]["hpf.filter"])
    a = fx["official_args"]
    assert built.cfg.ema_beta == 0.999 and (a["beta1"], a["beta2"]) == (0.0, 0.99)
    opt = built.trainer.optims
    assert opt["mapping_network"].param_groups[0]["lr"] == a["f_lr"]
    for name in ("generator", "style_encoder", "discriminator"):
        group = opt[name].param_groups[0]
        assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (a["lr"], (0.0, 0.99), 1e-8,
                                                                                      a["weight_decay"])


def init_forward_checks(fx: dict, tmp_dir: Path) -> list[Check]:
    """G, F, E, D and the EMA nets on batch 1 at the initial state, and the FAN's face masks."""
    with official_numerics():
        built = build(fx, tmp_dir)
        batch = batch_of(fx, 1)
        init = fx["init"]
        checks = []
        masks = None
        if built.fan is not None:
            masks = tuple(init["masks(x_src)"])
            for i, (mine, ref) in enumerate(zip(built.fan.masks(batch.x_src), masks, strict=True)):
                checks.append(tensor_check(f"FAN mask {i}", mine, ref, 1e-5))
        checks += forward_checks(built.nets, init, batch, masks, "init", 1e-5)
    return checks


@pytest.mark.parametrize("exact", [False, True], ids=["readme_tolerance", "bit_identical"])
def test_forward_outputs_at_init(train_results, exact):
    check_group(train_results["init"], exact)


@pytest.mark.parametrize("exact", [False, True], ids=["readme_tolerance", "bit_identical"])
def test_training_free_running(train_results, exact):
    """Losses, totals, gradients, nets, EMA, Adam and updates of 3 iterations; λ_ds; final forward."""
    check_group(train_results["free"], exact)


@pytest.mark.parametrize("exact", [False, True], ids=["readme_tolerance", "bit_identical"])
def test_training_replay(train_results, exact):
    """The same, each iteration started from the recorded official state."""
    check_group(train_results["replay"], exact)


def check_group(checks: list[Check], exact: bool) -> None:
    """The README's tolerances, or bit equality (bar the values the README says cannot be equal)."""
    (assert_bit_identical if exact else assert_within_tolerance)(checks)


# ----------------------------------------------------------------------------- tests: full-size fixtures


def full_arch(arch: dict) -> StarGANv2Arch:
    c = arch["config"]
    return StarGANv2Arch(img_size=c["img_size"], style_dim=c["style_dim"], latent_dim=c["latent_dim"], max_conv_dim=512,
                         w_hpf=c["w_hpf"], domains=tuple(f"domain{i}" for i in range(c["num_domains"])))


def full_nets(arch: dict, device: str = "cpu") -> dict:
    """The four unnarrowed project nets (official mapping width 512); on "meta" for shapes only."""
    with torch.device(device):
        return {**build_translation_nets(full_arch(arch)),
                "discriminator": Discriminator(arch["config"]["img_size"], arch["config"]["num_domains"], 512)}


def test_full_size_layout_matches_official(fx_full):
    """Official default architectures: keys, shapes and parameter counts, less the unread tensors."""
    for arch_name, arch in fx_full["archs"].items():
        w_hpf = arch["config"]["w_hpf"]
        for name, net in full_nets(arch, "meta").items():
            official = {k: tuple(s) for k, s in arch["keys"][name]}
            kept = {k: s for k, s in official.items() if not is_unread_official_key(k, name, w_hpf)}
            ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
            assert ours == kept, \
                f"{arch_name} {name}: keys or shapes differ: {sorted(set(ours.items()) ^ set(kept.items()))}"
            dropped = sum(math.prod(s) for k, s in official.items() if k not in kept and k != "hpf.filter")
            n_params = sum(p.numel() for p in net.parameters())
            assert n_params == arch["params"][name] - dropped, f"{arch_name} {name}: {n_params} parameters"


@pytest.mark.parametrize("exact", [False, True], ids=["readme_tolerance", "bit_identical"])
def test_full_size_forward(fx_full, full_results, exact):
    """Recipe weights in the official architectures: F, E, G (official masks), D; FAN heatmaps and masks."""
    assert set(full_results) == set(fx_full["archs"])
    for checks in full_results.values():
        check_group(checks, exact)


def full_forward_checks(fx_full: dict, arch: dict, tmp_dir: Path) -> list[Check]:
    with official_numerics():
        g = torch.Generator().manual_seed(fx_full["inputs_seed"])
        x_src = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
        x_ref = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
        require_checksum(x_src, fx_full["inputs_checksums"]["x_src"], "x_src")
        require_checksum(x_ref, fx_full["inputs_checksums"]["x_ref"], "x_ref")
        w_hpf = arch["config"]["w_hpf"]
        nets = {}
        for name, net in full_nets(arch).items():
            state = recipe_state(arch["recipe"][name], arch["checksums"][name],
                                 skip=lambda key, name=name: is_unread_official_key(key, name, w_hpf))
            net.load_state_dict(state, strict=True)
            nets[name] = net.eval()
        checks, masks = [], None
        if w_hpf > 0:
            fan = load_fan(write_fan_weights(arch["fan_recipe"], arch["fan_checksums"], tmp_dir / "wing.ckpt"))
            assert sum(p.numel() for p in fan.parameters()) == arch["fan_params"]
            ours = {k: tuple(v.shape) for k, v in fan.state_dict().items()}
            assert {k: tuple(s) for k, s in arch["fan_keys"]} == ours, "FAN keys or shapes differ"
            x01 = F.interpolate(x_src, size=256, mode="bilinear") * 0.5 + 0.5
            with torch.no_grad():
                checks.append(tensor_check("FAN forward(x01)", fan(x01), arch["fan_forward(x01)"], 1e-5))
            masks = tuple(arch["masks(x_src)"])
            for i, (mine, ref) in enumerate(zip(fan.masks(x_src), masks, strict=True)):
                checks.append(tensor_check(f"FAN mask {i}", mine, ref, 1e-5))
        ref, y, z = arch["forward"], arch["y"], arch["z"]
        calls = {"F(z,y)": lambda: nets["mapping_network"](z, y),
                 "E(x_ref,y)": lambda: nets["style_encoder"](x_ref, y),
                 "G(x_src,F(z,y))": lambda: nets["generator"](x_src, ref["F(z,y)"], masks=masks),
                 "D(x_src,y)": lambda: nets["discriminator"](x_src, y),
                 "D(G(x_src,F(z,y)),y)": lambda: nets["discriminator"](ref["G(x_src,F(z,y))"], y)}
        assert set(ref) == set(calls), f"forward outputs {sorted(ref)}"
        with torch.no_grad():
            checks += [tensor_check(f"forward {key}", calls[key](), value, 1e-5) for key, value in ref.items()]
    return checks


# ----------------------------------------------------------------------------- the child process


def child_main(kind: str, path: str, out: str) -> None:
    """Compute every numeric check of one fixture file and write them as JSON (see checks_in_child)."""
    fx = load(Path(path))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if kind == "train":
            groups = {"init": init_forward_checks(fx, tmp_dir), "free": free_running_checks(fx, tmp_dir),
                      "replay": replay_checks(fx, tmp_dir)}
        else:
            groups = {name: full_forward_checks(fx, arch, tmp_dir) for name, arch in fx["archs"].items()}
    Path(out).write_text(json.dumps({g: [dataclasses.asdict(c) for c in cs] for g, cs in groups.items()}))


if __name__ == "__main__":
    child_main(*sys.argv[1:])
