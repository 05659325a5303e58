"""Write the compatibility fixtures of a release: what its CLI writes, for later code to load.

For each model family (ugatit, photo2cartoon, stargan_v2) it trains a tiny model with
``unpaired train`` for 4 iterations (checkpoints at steps 2 and 4), then keeps:

* ``<family>/run/``: the run directory as training left it, less ``logs/`` and ``samples/``
  (config.yaml and both checkpoints: all a resume or a translation needs);
* ``<family>/weights.safetensors``: the newest checkpoint's weights (what users copy out of a run);
* ``<family>/*.onnx``: ``unpaired export`` of the newest weights;
* ``<family>/expected/``: what this release makes of them: ``translate/`` (``unpaired translate``
  from the run directory), ``test/`` (``unpaired test``, two-domain models) and ``losses.json``
  (every logged scalar of the uninterrupted run at steps 1-4, from its TensorBoard logs);
* ``data/``: the tiny data sets, cut from the package's emoji demo data (with its licence README);
* ``manifest.json`` (sha256, size and a content digest of every file, versions) and ``README.md``
  (the commands).

Files over ``MAX_FILE_BYTES`` are not meant for the repository. StarGAN v2 has them whatever its
options: its mapping network is 512 wide (fixed in today's code), 2.4M parameters stored four
times per checkpoint (net, EMA copy, two Adam moments), so one run is ~100 MB. Such a family's
trained files (``run/``, weights, ONNX) are listed in the manifest with ``"stored": false`` and
removed (``--keep-large`` keeps them); tests/test_compat.py regenerates them by running this
script on the recorded source commit from git history, and checks their content digests
against the manifest before using them.

Everything runs in this process through ``unpaired.cli.main``, at one thread, with oneDNN and
ATen capped at AVX2 (the script re-executes itself with those variables), so that the numbers do
not depend on which x86 CPU made them. tests/test_compat.py runs the CLI the same way.

Usage: python tools/make_compat_fixtures.py [--out DIR] [--only FAMILY ...] [--keep-large]
(default --out: tests/compat_fixtures/<version of the unpaired package imported>). The package
is the one on PYTHONPATH: run it with the code whose files are to be pinned.
It runs with the unpaired 0.1.0 source (its imports and CLI flags are 0.1.0's, not ported to later
layouts): tests/test_compat.py puts that source, from git history, on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNELS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
FAMILIES = ("ugatit", "photo2cartoon", "stargan_v2")
DOMAINS = {"openmoji": ("trainA", "testA"), "fluent": ("trainB", "testB")}  # StarGAN v2 domains: the two styles
N_TRAIN, N_TEST = 4, 2
COMMON = ["--device", "cpu", "--deterministic", "--num-workers", "0", "--iters", "4", "--save-freq", "2",
          "--keep-checkpoints", "2", "--log-freq", "1", "--print-freq", "1000", "--seed", "7"]
TRAIN = {
    "ugatit": ["--model", "ugatit", "--light", "--img-size", "32", "--ch", "4", "--n-res", "1", "--faithful",
               "--n-samples", "1"],
    "photo2cartoon": ["--model", "photo2cartoon", "--img-size", "32", "--ch", "4", "--n-res", "1", "--faithful",
                      "--n-samples", "1"],
    "stargan_v2": ["--model", "stargan_v2", "--img-size", "32", "--max-conv-dim", "8", "--style-dim", "2",
                   "--latent-dim", "2", "--batch-size", "2", "--val-batch-size", "2", "--num-outs-per-domain", "1"],
}
# StarGAN v2 translations: latent-guided into one domain (2 styles), reference-guided into the other
LATENT = ["--target-domain", "fluent", "--seed", "3", "--num", "2"]
REFERENCE_DOMAIN = "openmoji"
MAX_FILE_BYTES = 5_000_000
TIMING_TAGS = ("speed/",)  # wall-clock scalars: not reproducible, left out of losses.json


def reexec_with_kernels() -> None:
    """Restart this script with the kernel caps set (they are read once, at the first convolution)."""
    if all(os.environ.get(k) == v for k, v in KERNELS.items()):
        return
    env = {**os.environ, **KERNELS}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def cli(argv: list[str], log: list[list[str]]) -> None:
    """``unpaired ARGV`` in this process; recorded for the README; any failure stops the script."""
    from unpaired.cli import main

    log.append(argv)
    rc = main(argv)
    if rc != 0:
        sys.exit(f"unpaired {' '.join(argv)} failed with exit code {rc}")


def copy_images(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(src / name, dst / name)


def make_data(out: Path) -> dict[str, Path]:
    """The two-domain (trainA/B, testA/B) and the multi-domain (train/<d>, val/<d>) data sets,
    the first images of each folder of the demo data, with its licence README."""
    from unpaired.data import demo_dataset_path

    demo = demo_dataset_path()
    first = {folder: sorted(p.name for p in (demo / folder).iterdir())
             for folder in ("trainA", "trainB", "testA", "testB")}
    two, multi = out / "two_domain", out / "multidomain"
    for folder, names in first.items():
        count = N_TRAIN if folder.startswith("train") else N_TEST
        copy_images(demo / folder, two / folder, names[:count])
    for domain, (train, test) in DOMAINS.items():
        copy_images(demo / train, multi / "train" / domain, first[train][:N_TRAIN])
        copy_images(demo / test, multi / "val" / domain, first[test][:N_TEST])
    for folder in (two, multi):
        shutil.copy(demo / "README.md", folder / "README.md")
    return {"two_domain": two, "multidomain": multi}


def scalars(run: Path) -> dict[str, dict[str, float]]:
    """step → {tag: value} of every scalar in the run's TensorBoard logs (as stored: float32)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict[str, float]] = {}
    for events in sorted((run / "logs").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(TIMING_TAGS):
                continue
            for event in acc.Scalars(tag):
                found.setdefault(str(event.step), {})[tag] = event.value
    return found


def make_family(family: str, out: Path, data: dict[str, Path], log: list[list[str]]) -> None:
    """Train, export and translate one family (see the module docstring for what is kept)."""
    from unpaired import checkpoint as ckpt

    folder = out / family
    if folder.exists():
        shutil.rmtree(folder)
    run, expected = folder / "run", folder / "expected"
    two_domain = family != "stargan_v2"
    dataset = data["two_domain" if two_domain else "multidomain"]
    cli(["train", "--data", str(dataset), "--out", str(run), *TRAIN[family], *COMMON], log)
    steps = [p.name for p in ckpt.list_checkpoints(run)]
    assert steps == ["0000002", "0000004"], steps
    expected.mkdir(parents=True)
    (expected / "losses.json").write_text(json.dumps(scalars(run), indent=1, sort_keys=True) + "\n")
    shutil.rmtree(run / "logs")
    shutil.rmtree(run / "samples", ignore_errors=True)
    shutil.copy(ckpt.latest_checkpoint(run) / ckpt.WEIGHTS, folder / "weights.safetensors")
    if two_domain:
        cli(["export", "--checkpoint", str(run), "--output", str(folder / "model_A2B.onnx"), "--direction", "A2B"],
            log)
        for direction, source in (("A2B", "testA"), ("B2A", "testB")):
            cli(["translate", "--checkpoint", str(run), "--input", str(dataset / source), "--output",
                 str(expected / "translate" / direction), "--direction", direction, "--faces", "off",
                 "--device", "cpu"], log)
        cli(["test", "--run", str(run), "--data", str(dataset), "--out", str(expected / "test"), "--device", "cpu"],
            log)
    else:
        cli(["export", "--checkpoint", str(run), "--output", str(folder / "model.onnx")], log)
        cli(["translate", "--checkpoint", str(run), "--input", str(dataset / "val" / REFERENCE_DOMAIN),
             "--output", str(expected / "translate" / "latent"), *LATENT, "--device", "cpu"], log)
        reference = sorted((dataset / "val" / "fluent").iterdir())[0]
        cli(["translate", "--checkpoint", str(run), "--input", str(dataset / "val" / "fluent"),
             "--output", str(expected / "translate" / "reference"), "--target-domain", REFERENCE_DOMAIN,
             "--reference", str(reference), "--device", "cpu"], log)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _feed(h, obj) -> None:
    """Hash a loaded object canonically: dict keys sorted, tensors by dtype, shape and bytes."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def content_digest(path: Path, out: Path) -> str:
    """A digest of what a file holds, equal for equal contents however it was serialised:
    safetensors (metadata and tensors; its writer orders metadata keys at random), torch files
    (loaded, canonically hashed), config.yaml (with this output folder as a placeholder: it
    records absolute paths); the bytes of anything else (PNG, ONNX, JSON)."""
    import torch

    h = hashlib.sha256()
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            _feed(h, {"metadata": f.metadata(), "tensors": {k: f.get_tensor(k) for k in f.keys()}})
    elif path.suffix in (".pt", ".pth"):
        _feed(h, torch.load(path, map_location="cpu", weights_only=True))
    elif path.name == "config.yaml":
        h.update(path.read_text().replace(str(out), "<OUT>").encode())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime
    import torch

    import unpaired

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {"unpaired": unpaired.__version__, "unpaired_source": str(Path(unpaired.__file__).parent),
            "source_commit": git("log", "-1", "--format=%H", "--", "src"),
            "source_clean": str(git("status", "--porcelain", "--", "src") == ""),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "threads": str(torch.get_num_threads()), **{k: os.environ[k] for k in KERNELS},
            "cpu": platform.processor() or platform.machine()}


def write_manifest(out: Path, log: list[list[str]], info: dict[str, str], keep_large: bool) -> list[str]:
    """manifest.json; unless ``keep_large``, removes the trained files of families with a file over
    MAX_FILE_BYTES (listed as not stored). Returns those families."""
    files = {str(p.relative_to(out)): {"sha256": sha256(p), "bytes": p.stat().st_size,
                                       "content": content_digest(p, out), "stored": True}
             for p in sorted(out.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "README.md")}
    large = sorted({name.split("/")[0] for name, f in files.items() if f["bytes"] > MAX_FILE_BYTES})
    if not keep_large:
        for name, f in files.items():
            family, _, rest = name.partition("/")
            if family in large and not rest.startswith("expected/"):
                (out / name).unlink()
                f["stored"] = False
        for family in large:
            for folder in sorted((out / family).rglob("*"), reverse=True):
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    manifest = {"versions": info, "commands": [["unpaired", *a] for a in log], "not_stored": large if not keep_large
                else [], "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return large if not keep_large else []


README = """# Compatibility fixtures of unpaired {version}

Files written by unpaired {version} (source commit `{commit}`), for tests/test_compat.py: later
code must load these run directories, checkpoints and ONNX files, translate them to the same
pictures and resume them to the same losses. Do not regenerate them with later code: they pin
what {version} wrote. `manifest.json` lists every file with its sha256 and these versions:

{versions}

Made by `tools/make_compat_fixtures.py` (`PYTHONPATH=src python tools/make_compat_fixtures.py`):
one process, one thread, `ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` (so that the numbers
do not depend on the x86 CPU). Each family trained for 4 iterations on a tiny data set, checkpoints
at steps 2 and 4; `logs/` and `samples/` were then removed from the run directories (a resume does
not read them). The run directories' `config.yaml` hold the absolute data and output paths of the
machine that made them: pass `--data` (and `--out`) when resuming. Commands, in order (paths as
they were then):

{commands}

Contents per family (`ugatit`, `photo2cartoon`, `stargan_v2`):

* `run/`: `config.yaml`, `checkpoints/0000002/` and `checkpoints/0000004/` (`weights.safetensors`
  and `state.pt` each);
* `weights.safetensors`: a copy of `run/checkpoints/0000004/weights.safetensors`;
* `model_A2B.onnx` (two-domain models) or `model.onnx` + `model_reference.onnx` (StarGAN v2):
  `unpaired export` of the newest weights;
* `expected/translate/`: `unpaired translate` from the run directory (two-domain: A2B of testA,
  B2A of testB; StarGAN v2: latent-guided `{latent}` of val/openmoji, reference-guided into
  openmoji of val/fluent with its first picture as reference);
* `expected/test/` (two-domain): `unpaired test` (translated, heatmap and side-by-side pictures);
* `expected/losses.json`: every TensorBoard scalar of the uninterrupted run, by step (1-4),
  except the wall-clock `speed/*`.

{not_stored}

`data/`: `two_domain/` (trainA/trainB 4 images, testA/testB 2) and `multidomain/` (train/ 4 and
val/ 2 per domain; domains openmoji = the demo data's A style, fluent = its B style), the first
files of the package's emoji demo data, with its README (licences: OpenMoji CC-BY-SA-4.0, Fluent
Emoji MIT).
"""


NOT_STORED = """Not stored here: the trained files (`run/`, `weights.safetensors`, ONNX) of {families}. They
hold files over {limit} MB whatever the options (StarGAN v2: its mapping network is 512 wide in
this release, 2.4M parameters, stored four times per checkpoint: about 100 MB per run).
`manifest.json` lists them with `"stored": false` and their content digests; tests/test_compat.py
regenerates them with `tools/make_compat_fixtures.py --only {families} --keep-large` run on the
source commit above (from git history) and checks those digests before testing with them. Their
`expected/` outputs are stored."""


def write_readme(out: Path, log: list[list[str]], info: dict[str, str], large: list[str]) -> None:
    not_stored = NOT_STORED.format(families=" ".join(large), limit=MAX_FILE_BYTES // 1_000_000) if large else ""
    text = README.format(version=info["unpaired"], commit=info["source_commit"], not_stored=not_stored,
                         versions="\n".join(f"* {k}: {v}" for k, v in info.items() if k != "unpaired_source"),
                         commands="\n".join("    unpaired " + " ".join(a) for a in log),
                         latent=" ".join(LATENT))
    (out / "README.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="folder to write (default tests/compat_fixtures/<version>)")
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--keep-large", action="store_true",
                        help=f"keep the trained files of families with a file over {MAX_FILE_BYTES} bytes")
    args = parser.parse_args()
    reexec_with_kernels()
    import torch

    import unpaired

    torch.set_num_threads(1)
    out = (args.out or REPO / "tests" / "compat_fixtures" / unpaired.__version__).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "data").exists():
        shutil.rmtree(out / "data")
    data = make_data(out / "data")
    log: list[list[str]] = []
    for family in args.only:
        make_family(family, out, data, log)
    info = versions()
    large = write_manifest(out, log, info, args.keep_large)
    write_readme(out, log, info, large)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
