"""Run options (unpaired.options and the families' options): checked values from YAML and flags
alike, per-family ``train --help``, frozen options, the top-level CLI, and config.yaml files of
the previous release's flat format."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

import unpaired
from conftest import TINY, run_cli
from unpaired import checkpoint as ckpt
from unpaired import options as opt
from unpaired.cli import main
from unpaired.models import registry
from unpaired.models.ugatit.options import UGATITArch, UGATITOptions, resolve_n_dis


def one_error_line(capsys) -> str:
    """The single stderr line of a refused command, which must carry no traceback."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("unpaired: error: ") and lines[0].count("error:") == 1, lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- values from YAML


@pytest.mark.parametrize("text,needles", [
    ('light: "false"\n', ["--light", "true or false", "'false'"]),  # a string, not read as true
    ("light: 1\n", ["--light", "true or false"]),
    ("iters: 1.5\n", ["--iters", "whole number", "1.5"]),
    ("lr: .nan\n", ["--lr", "finite"]),
    ("lr: .inf\n", ["--lr", "finite"]),
    ("ch: 0\n", ["--ch", "at least 1", "0"]),
    ("img_size: big\n", ["--img-size", "whole number"]),
    ("precision: fp8\n", ["--precision", "one of"]),
    ("bogus_option: 3\n", ["'bogus_option'", "not an option of --model ugatit"]),
    ("cam_weight: 1\n", ["'cam_weight'", "not an option of --model stargan_v2"]),  # another family's option
])
def test_config_file_values_are_checked_like_flags(tiny_data, tmp_path, capsys, text, needles):
    config = tmp_path / "opts.yaml"
    model = "stargan_v2" if "cam_weight" in text else "ugatit"
    config.write_text(f"model: {model}\n{text}")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--data", str(tiny_data), "--out", str(out),
                 "--device", "cpu"]) == 2
    line = one_error_line(capsys)
    assert all(needle in line for needle in needles), line
    if "not an option" not in line:
        assert str(config) in line  # the file that gave the value is named
    assert not out.exists()  # refused before anything is written


def test_the_same_checks_refuse_the_flags(tiny_data, tmp_path, capsys):
    for flags, needles in ((["--ch", "0"], ("--ch", "must be at least 1, got 0")),
                           (["--iters", "1.5"], ("--iters",)),
                           (["--lr", "nan"], ("--lr", "must be a finite number"))):
        assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "run"), *flags]) == 2, flags
        line = one_error_line(capsys)
        assert all(needle in line for needle in needles), (flags, line)
    assert not (tmp_path / "run").exists()


def write_binary(path):
    path.write_bytes(bytes(range(256)) * 4)


def write_nul(path):
    path.write_bytes(b"light: true\n\x00\x00\n")


@pytest.mark.parametrize("kind,needle", [
    ("folder", "is not a file"),
    ("binary", "not a text file"),
    ("nul", "not a text file"),
    ("missing", "not found"),
    ("malformed", "not valid YAML"),
    ("list", "must hold a mapping"),
])
def test_config_file_that_is_not_a_yaml_mapping_is_refused(tmp_path, capsys, kind, needle):
    config = tmp_path / "opts.yaml"
    if kind == "folder":
        config.mkdir()
    elif kind == "binary":
        write_binary(config)
    elif kind == "nul":
        write_nul(config)
    elif kind == "malformed":
        config.write_text("light: [true\n")
    elif kind == "list":
        config.write_text("- light\n- ch\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert needle in line and str(config) in line, line


def test_yaml_values_of_the_right_type_are_taken():
    opts = opt.build(UGATITOptions, ("config file", yaml.safe_load("light: false\niters: 2.0\nlr: 2.0e-4\nch: 8\n")))
    assert opts.arch.light is False and opts.arch.ch == 8 and opts.lr == 2e-4
    assert opts.iters == 2 and isinstance(opts.iters, int)  # a whole float is a whole number


# ----------------------------------------------------------------------------- train --help per family


def help_entries(text: str) -> dict[str, str]:
    """Flag -> its help text (whitespace normalised) from the options section of an argparse help page."""
    entries: dict[str, str] = {}
    current = None
    for line in text.split("\noptions:\n", 1)[1].splitlines():
        match = re.match(r"^  (-\S+)", line)
        if match:
            current = match.group(1).rstrip(",")
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line
    return {flag: " ".join(body.split()) for flag, body in entries.items()}


def train_help(capsys, *args: str) -> dict[str, str]:
    assert main(["train", *args, "--help"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return help_entries(captured.out)


STARGAN_ONLY = {"--lambda-ds", "--ema-beta", "--lambda-reg", "--style-dim", "--preset", "--f-lr"}
UGATIT_ONLY = {"--cam-weight", "--light", "--n-res", "--n-dis", "--cycle-weight"}


def test_train_help_lists_the_chosen_familys_options_only(capsys):
    ugatit = train_help(capsys)
    stargan = train_help(capsys, "--model", "stargan_v2")
    assert STARGAN_ONLY <= set(stargan) and not UGATIT_ONLY & set(stargan)
    assert UGATIT_ONLY <= set(ugatit) and not STARGAN_ONLY & set(ugatit)
    # every option only StarGAN v2 has is absent from the U-GAT-IT page, and the other way round
    assert not (set(stargan) - set(ugatit)) & set(ugatit) and set(stargan) - set(ugatit) >= STARGAN_ONLY
    for shared in ("--data", "--out", "--iters", "--seed", "--batch-size", "--config", "--resume"):
        assert shared in ugatit and shared in stargan


def test_train_help_shows_the_familys_defaults(capsys, tmp_path):
    ugatit = train_help(capsys)
    stargan = train_help(capsys, "--model", "stargan_v2")
    cartoon = train_help(capsys, "--model", "photo2cartoon")
    assert "(default: 777)" in stargan["--seed"] and "(default: 0)" in ugatit["--seed"]
    assert "(default: 8)" in stargan["--batch-size"] and "(default: 1)" in ugatit["--batch-size"]
    assert "(default: 32)" in cartoon["--ch"] and "(default: 64)" in ugatit["--ch"]
    assert "(default: True)" in cartoon["--light"] and "(default: False)" in ugatit["--light"]
    assert "(default: stargan_v2)" in stargan["--model"] and "(default: ugatit)" in ugatit["--model"]
    # the family a --config file names chooses the page too
    config = tmp_path / "sg.yaml"
    config.write_text("model: stargan_v2\n")
    assert STARGAN_ONLY <= set(train_help(capsys, "--config", str(config)))


# ----------------------------------------------------------------------------- frozen options


@pytest.mark.parametrize("name", registry.names())
def test_options_are_frozen(name):
    opts = registry.family(name).options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.iters = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.arch.img_size = 64
    assert opts.iters == registry.family(name).options().iters


def test_resolve_n_dis_returns_new_options_and_leaves_its_input_alone():
    given = UGATITOptions(arch=UGATITArch(img_size=32), lr=2e-4)
    before = dataclasses.asdict(given)
    resolved, note = resolve_n_dis(given)
    assert resolved is not given and resolved.arch.n_dis == 4 and note
    assert given.arch.n_dis is None and dataclasses.asdict(given) == before
    assert dataclasses.replace(resolved, arch=given.arch) == given  # nothing else changed
    explicit = UGATITOptions(arch=UGATITArch(img_size=256, n_dis=5))
    assert resolve_n_dis(explicit) == (explicit, None)


def test_changed_returns_new_options_and_leaves_the_saved_ones_alone():
    saved = opt.build(UGATITOptions, ("test", {"img_size": 32, "iters": 10}))
    before = dataclasses.asdict(saved)
    updated, notes = opt.changed(saved, {"iters": 20})
    assert updated.iters == 20 and notes == ["iters: 10 -> 20"]
    assert saved.iters == 10 and dataclasses.asdict(saved) == before


# ----------------------------------------------------------------------------- the top-level CLI


def test_version_is_printed():
    proc = run_cli("--version")
    assert proc.stdout.strip() == f"unpaired {unpaired.__version__}"


@pytest.mark.parametrize("argv,needle", [
    (["--bogus"], "--bogus"),
    (["--bogus", "train"], "--bogus"),
    (["train", "--bogus-flag"], "--bogus-flag"),
    (["train", "--model", "stargan_v2", "--cam-weight", "3"], "--cam-weight"),  # another family's flag
    (["train", "--iters", "abc"], "--iters"),
    (["test", "--checkpoint", "somewhere", "--bogus"], "--bogus"),
    (["eval", "--run", "somewhere", "--bogus"], "--bogus"),
])
def test_unknown_flags_give_one_error_line(capsys, argv, needle):
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert needle in line and "--help" in line, line
    assert capsys.readouterr().out == ""  # no page of help instead of the error


# ----------------------------------------------------------------------------- the previous release's config.yaml


def flatten(config: dict) -> dict:
    """config.yaml as the previous release wrote it: every option at the top level, arch fields after model."""
    flat = {}
    for key, value in config.items():
        if key == "arch":
            continue
        flat[key] = value
        if key == "model":
            flat.update(config["arch"])
    return flat


@pytest.mark.parametrize("with_model", [True, False], ids=["flat", "flat-without-model"])
def test_a_flat_config_yaml_of_the_previous_release_resumes(tiny_data, tmp_path, with_model):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *TINY, "--iters", "2", "--save-freq", "2",
                 "--print-freq", "2", "--log-freq", "1"]) == 0
    nested = yaml.safe_load((run / "config.yaml").read_text())
    assert isinstance(nested["arch"], dict) and "light" not in nested  # the new format nests the architecture
    flat = flatten(nested)
    if not with_model:
        del flat["model"]  # the first release recorded no model
    text = yaml.safe_dump(flat, sort_keys=False)
    assert "\nlight: true\n" in text and "\nimg_size: 32\n" in text and "arch" not in text
    (run / "config.yaml").write_text(text)

    assert main(["train", "--resume", "--out", str(run), "--iters", "4"]) == 0
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["0000002", "0000004"]
    resumed = yaml.safe_load((run / "config.yaml").read_text())
    assert resumed["iters"] == 4 and resumed["model"] == "ugatit"
    assert resumed["arch"] == nested["arch"]  # same architecture (n_dis 4 chosen for 32 px included)
    assert {k: v for k, v in resumed.items() if k not in ("iters", "arch")} == \
        {k: v for k, v in nested.items() if k not in ("iters", "arch")}


def test_a_flat_config_yaml_refuses_an_incompatible_resume(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *TINY, "--iters", "2", "--save-freq", "2",
                 "--print-freq", "2"]) == 0
    (run / "config.yaml").write_text(yaml.safe_dump(flatten(yaml.safe_load((run / "config.yaml").read_text()))))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run), "--ch", "8"]) == 2
    line = one_error_line(capsys)
    assert "--ch 8" in line and "ch=4" in line
