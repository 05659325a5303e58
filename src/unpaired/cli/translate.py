"""``unpaired translate``: translate image files, folders, glob patterns and videos with a trained model."""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..data import DECODE_ERRORS, IMAGE_EXTENSIONS, list_images, load_rgb
from ..errors import UserError
from ..translate import DIRECTIONS, FITS, MODELS, StarGANv2Translator, Translator, checkpoint_model
from ..video import VIDEO_EXTENSIONS, is_video, output_suffix, translate_video
from ..viz import save_png

HELP = "translate images, folders, glob patterns and videos with a trained model"
log = logging.getLogger("unpaired")

SIZE_POLICY = """\
sizes: the model works on SxS squares. --fit stretch (default, as the official test phase)
resizes the whole picture to SxS; --fit pad scales its longer side to S and pads the shorter
one by repeating edge pixels (no squashed faces), cropping the padding off the result.
Results are SxS (stretch) or S on the longer side (pad); --keep-size resizes them to the
input's exact width and height.
videos (mp4, webm, mov, mkv, avi, animated gif) are translated frame by frame at the same
frame rate into mp4 (gif stays gif); audio is dropped.
StarGAN v2 models translate into --target-domain D: latent-guided (default) writes --num N
outputs per input as NAME_D_seedS_K.png (K = 0..N-1; output K has the same style for every input
and the same pixels for the same --seed), reference-guided (--reference IMG) writes
NAME_D_ref-REFNAME.png in the style of IMG. Videos are not translated with StarGAN v2 models."""


@dataclass(frozen=True)
class Job:
    """One input file and the output name (relative, no suffix) its results are written under."""

    source: Path
    name: str
    video: bool

    def target(self, out: Path, tag: str = "") -> Path:
        suffix = output_suffix(self.source) if self.video else ".png"
        return out / f"{self.name}{tag}{suffix}"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = SIZE_POLICY
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="run folder (newest checkpoint), weights .safetensors, official .pt or exported .onnx")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image or video files, folders (searched recursively) or glob patterns")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR",
                        help="folder for the results; names mirror the inputs' (images become .png)")
    parser.add_argument("--direction", choices=list(DIRECTIONS), default=None,
                        help="which generator to run (default A2B; an .onnx file holds one)")
    parser.add_argument("--heatmap", action="store_true",
                        help="also write <name>_heatmap.png: the attention map over the input")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="pictures (or video frames) per forward pass (default 8)")
    parser.add_argument("--size", type=positive_int, default=None,
                        help="model resolution S for a light model (default: its training size, "
                             "256 for an official light .pt); full models run only at their own")
    parser.add_argument("--keep-size", action="store_true", help="resize results to the inputs' width and height")
    parser.add_argument("--fit", choices=FITS, default="stretch", help="how non-square inputs enter the model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--faces", choices=("auto", "on", "off"), default="auto",
                        help="detect, align and cut out the largest face first, like the training data of "
                             "photo2cartoon (auto: on for photo2cartoon models; needs unpaired[faces])")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="auto",
                        help="fp16 on CUDA only (auto: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--model", choices=list(MODELS), default=None,
                        help="the checkpoint's model family (default: read from the checkpoint; checked if given)")
    group = parser.add_argument_group("StarGAN v2")
    group.add_argument("--target-domain", metavar="D", help="domain to translate into (a sub-folder name of the "
                                                            "training data)")
    group.add_argument("--reference", type=Path, metavar="IMG",
                       help="reference-guided: take the style from this picture (default: latent-guided)")
    group.add_argument("--seed", type=nonnegative_int, default=None,
                       help="latent-guided: seed of the latent codes (default 0)")
    group.add_argument("--num", type=positive_int, default=None, help="latent-guided: outputs per input (default 1)")
    group.add_argument("--fan-weights", type=Path, metavar="FILE",
                       help="the official FAN wing.ckpt, for models trained with face masks (--w-hpf > 0)")


# ----------------------------------------------------------------------------- input planning


def _expand(arg: str, out: Path) -> list[Job]:
    """The jobs one --input names: a file, a folder's media files, or a glob pattern's matches."""
    path = Path(arg)
    if path.is_dir():
        media = list_images(path, IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
        files = [p for p in media if out not in p.resolve().parents]  # not our own earlier results
        return [Job(p, p.relative_to(path).with_suffix("").as_posix(), is_video(p)) for p in files]
    if path.is_file():
        return [Job(path, path.stem, is_video(path))]
    if glob.has_magic(arg):
        matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
        if matches:
            return [job for match in matches for job in _expand(str(match), out)]
        raise UserError("no file matches this pattern")
    raise UserError("no such file or folder")


def plan(inputs: list[str], out: Path) -> tuple[list[Job], int]:
    """Every job named by the inputs, each output name used once; returns (jobs, inputs skipped)."""
    jobs: dict[Path, Job] = {}
    skipped = 0
    for arg in inputs:
        try:
            expanded = _expand(arg, out.resolve())
        except UserError as exc:
            log.warning(f"skipping {arg}: {exc}")
            skipped += 1
            continue
        for job in expanded:
            taken = jobs.get(job.target(out))
            if taken is not None and taken.source.resolve() != job.source.resolve():
                log.warning(f"skipping {job.source}: its result {job.target(out)} is already {taken.source}'s")
                skipped += 1
            else:
                jobs[job.target(out)] = job
    return list(jobs.values()), skipped


# ----------------------------------------------------------------------------- translation


def _options(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "fit": args.fit, "keep_size": args.keep_size}


def _face_preparer(translator: Translator | StarGANv2Translator, mode: str):
    """A FacePreparer when faces are to be cut out first (photo2cartoon), else None."""
    if mode == "off" or (mode == "auto" and translator.model != "photo2cartoon"):
        return contextlib.nullcontext()
    from ..faces import FacePreparer
    return FacePreparer(translator.img_size, "white")


# Per picture of a batch, the (name tag, picture) pairs to write: "" for the translation itself.
Render = Callable[[list[Image.Image]], list[list[tuple[str, Image.Image]]]]


def _two_domain_render(translator: Translator, args: argparse.Namespace) -> Render:
    def render(images: list[Image.Image]) -> list[list[tuple[str, Image.Image]]]:
        results = translator(images, **_options(args))
        return [[("", r.image)] + ([("_heatmap", r.overlay())] if args.heatmap else []) for r in results]

    return render


def _stargan_render(translator: StarGANv2Translator, args: argparse.Namespace,
                    reference: Image.Image | None) -> Render:
    """Latent-guided: tags _D_seedS_K for the --num outputs; reference-guided: _D_ref-REFNAME."""
    domain = args.target_domain
    if reference is not None:
        tag = f"_{domain}_ref-{args.reference.stem}"

        def render(images: list[Image.Image]) -> list[list[tuple[str, Image.Image]]]:
            return [[(tag, out)] for out in translator.reference(images, reference, domain, **_options(args))]
    else:
        seed, num = args.seed or 0, args.num or 1

        def render(images: list[Image.Image]) -> list[list[tuple[str, Image.Image]]]:
            results = translator.latent(images, domain, seed=seed, num=num, **_options(args))
            return [[(f"_{domain}_seed{seed}_{k}", out) for k, out in enumerate(outs)] for outs in results]

    return render


def _translate_images(translator: Translator | StarGANv2Translator, render: Render, jobs: list[Job],
                      args: argparse.Namespace, progress: tqdm) -> int:
    """Translate image jobs a batch at a time; an unreadable file or one without a face is skipped."""
    done = 0
    with _face_preparer(translator, args.faces) as faces:
        for start in range(0, len(jobs), args.batch_size):
            loaded = _load_batch(jobs[start:start + args.batch_size], faces, progress)
            done += _write_batch(render, loaded, args, progress)
    return done


def _load_batch(jobs: list[Job], faces, progress: tqdm) -> list[tuple[Job, object]]:
    loaded = []
    for job in jobs:
        try:
            image = load_rgb(job.source)
            loaded.append((job, faces.largest(image).image if faces else image))
        except DECODE_ERRORS as exc:
            log.warning(f"skipping {job.source}: not a readable image ({exc})")
            progress.update()
        except UserError as exc:
            log.warning(f"skipping {job.source}: {exc}")
            progress.update()
    return loaded


def _write_batch(render: Render, loaded: list, args: argparse.Namespace, progress: tqdm) -> int:
    results = render([image for _, image in loaded]) if loaded else []
    for (job, _), outputs in zip(loaded, results):
        for tag, picture in outputs:
            save_png(np.asarray(picture), job.target(args.output, tag))
        progress.update()
    return len(results)


def _translate_videos(translator: Translator | StarGANv2Translator, jobs: list[Job], args: argparse.Namespace,
                      progress: tqdm) -> int:
    done = 0
    for job in jobs:
        if isinstance(translator, StarGANv2Translator):
            log.warning(f"skipping {job.source}: videos are not translated with StarGAN v2 models")
            progress.update()
            continue
        heatmap = job.target(args.output, "_heatmap") if args.heatmap else None
        try:
            result = translate_video(translator, job.source, job.target(args.output),
                                     heatmap_target=heatmap, **_options(args))
        except UserError as exc:
            log.warning(f"skipping {job.source}: {exc}")
        else:
            audio = " (audio dropped)" if result.dropped_audio else ""
            log.info(f"{job.source} -> {job.target(args.output)}: {result.frames} frames at {result.rate} fps{audio}")
            done += 1
        progress.update()
    return done


# ----------------------------------------------------------------------------- StarGAN v2

STARGAN_FLAGS = ("target_domain", "reference", "seed", "num", "fan_weights")


def _wants_stargan(args: argparse.Namespace) -> bool:
    """The model the checkpoint records (.onnx files say so when opened), else --model, else StarGAN v2
    flags given; a --model the checkpoint contradicts is refused."""
    recorded = None if args.checkpoint.suffix == ".onnx" else checkpoint_model(args.checkpoint)
    if args.model is not None and recorded is not None and args.model != recorded:
        raise UserError(f"--model {args.model}, but {args.checkpoint} holds a {recorded} model")
    given = ["--" + name.replace("_", "-") for name in STARGAN_FLAGS if getattr(args, name) is not None]
    model = recorded or args.model
    if model is not None:
        if given and not MODELS[model].multidomain:
            source = f"{args.checkpoint} holds a {model} model" if recorded else f"--model {model} was given"
            raise UserError(f"{given[0]} is for StarGAN v2 models, but {source} (use --direction A2B|B2A)")
        return MODELS[model].multidomain
    return bool(given)


def _check_stargan_flags(args: argparse.Namespace) -> None:
    """Refuse flag combinations that mean nothing for StarGAN v2, before any model is loaded."""
    if args.reference is not None and (args.num is not None or args.seed is not None):
        raise UserError("--reference takes the style from a picture; --num and --seed are for latent-guided "
                        "translation (leave out --reference)")
    if args.direction is not None:
        raise UserError("--direction is for U-GAT-IT models; StarGAN v2 translates into --target-domain D")
    if args.heatmap:
        raise UserError("--heatmap is for U-GAT-IT models; StarGAN v2 has no attention map")


def _open_stargan(args: argparse.Namespace, half: bool | None) -> tuple[StarGANv2Translator, Render, str]:
    """The StarGAN v2 translator, how it renders a batch and what it does; every mistake refused before
    any input is read."""
    _check_stargan_flags(args)
    translator = StarGANv2Translator.from_checkpoint(args.checkpoint, args.device, args.size, half,
                                                     args.fan_weights)
    if args.target_domain is None:
        raise UserError(f"{args.checkpoint} holds a StarGAN v2 model: choose --target-domain "
                        f"(one of {', '.join(translator.domains)})")
    translator.domain_index(args.target_domain)
    reference = None
    if args.reference is not None:
        try:
            reference = load_rgb(args.reference)
        except DECODE_ERRORS as exc:
            raise UserError(f"--reference {args.reference}: not a readable image ({exc})") from None
        doing = f"into domain {args.target_domain} in the style of {args.reference}"
    else:
        doing = f"into domain {args.target_domain}, {args.num or 1} output(s) each, seed {args.seed or 0}"
    return translator, _stargan_render(translator, args, reference), doing


def _open(args: argparse.Namespace) -> tuple[Translator | StarGANv2Translator, Render, str]:
    """The translator the checkpoint (and --model) call for, how it renders a batch, and what it does."""
    half = {"auto": None, "fp32": False, "fp16": True}[args.precision]
    if _wants_stargan(args):
        translator, render, doing = _open_stargan(args, half)
    else:
        translator = Translator.from_checkpoint(args.checkpoint, args.direction, args.device, args.size, half)
        render, doing = _two_domain_render(translator, args), f"with {translator.direction}"
    if args.model is not None and args.model != translator.model:
        raise UserError(f"--model {args.model}, but {args.checkpoint} holds a {translator.model} model")
    return translator, render, doing


def run(args: argparse.Namespace) -> int:
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"--output {args.output} is a file, not a folder")
    translator, render, doing = _open(args)
    jobs, skipped = plan(args.input, args.output)
    images = [job for job in jobs if not job.video]
    videos = [job for job in jobs if job.video]
    with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="file", disable=None) as progress:
        done = _translate_images(translator, render, images, args, progress)
        done += _translate_videos(translator, videos, args, progress)
    skipped += len(jobs) - done
    if not done:
        raise UserError(f"nothing translated: all {skipped} input(s) were skipped")
    log.info(f"translated {done} file(s) {doing}; results in {args.output}"
             + (f"; skipped {skipped}" if skipped else ""))
    return 0
