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

from .. import guard
from ..data.images import DECODE_ERRORS, IMAGE_EXTENSIONS, list_images, load_rgb
from ..errors import UserError, WriteError
from ..faces import FaceCrop, FacePreparer
from ..inference.pictures import FITS
from ..video import VIDEO_EXTENSIONS, is_video, output_suffix
from ..viz import save_png
from ._args import add_device, image_size, positive_int, seed

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
multi-domain models (StarGAN v2) translate into --target-domain D: latent-guided (default) writes
--num N outputs per input as NAME_D_seedS_K.png (K = 0..N-1; output K has the same style for every
input and the same pixels for the same --seed), reference-guided (--reference IMG) writes
NAME_D_ref-REFNAME.png in the style of IMG. Videos are not translated with them."""

# Flag -> the keyword it becomes for a translator, when loading it or per call.
LOAD_FLAGS = {"direction": "direction", "fan_weights": "fan_weights"}
CALL_FLAGS = {"target_domain": "domain", "seed": "seed", "num": "num", "reference": "reference"}


@dataclass(frozen=True)
class Job:
    """One input file and the output name (relative, no suffix) its results are written under."""

    source: Path
    name: str
    video: bool

    def target(self, out: Path, tag: str = "") -> Path:
        suffix = output_suffix(self.source) if self.video else ".png"
        return out / f"{self.name}{tag}{suffix}"

    def targets(self, out: Path, tags: list[str]) -> list[Path]:
        return [self.target(out, tag) for tag in tags]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = SIZE_POLICY
    parser.add_argument("--checkpoint", "--run", dest="checkpoint", type=Path, required=True,
                        help="run folder (newest checkpoint), weights .safetensors, official file or exported .onnx")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image or video files, folders (searched recursively) or glob patterns")
    parser.add_argument("--out", "--output", dest="out", type=Path, required=True, metavar="DIR",
                        help="folder for the results; names mirror the inputs' (images become .png)")
    parser.add_argument("--direction", choices=("A2B", "B2A"), default=None,
                        help="two-domain models: which generator to run (default A2B; an .onnx file holds one)")
    parser.add_argument("--heatmap", action="store_true",
                        help="also write <name>_heatmap.png: the attention map over the input (models with attention)")
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="pictures (or video frames) per forward pass (default 8), capped to bound memory at "
                             "2**20 model pixels per pass: 16 at 256 px, 4 at 512, 1 at 1024")
    parser.add_argument("--img-size", "--size", dest="img_size", type=image_size, default=None,
                        help="model resolution S for a light model (default: its training size, "
                             "256 for an official light .pt); full models run only at their own")
    parser.add_argument("--keep-size", action="store_true", help="resize results to the inputs' width and height")
    parser.add_argument("--fit", choices=FITS, default="stretch", help="how non-square inputs enter the model")
    add_device(parser)
    parser.add_argument("--faces", choices=("auto", "on", "off"), default="auto",
                        help="detect, align and cut out the largest face first, like the training data of "
                             "photo2cartoon (auto: on for models trained on face crops; needs unpaired[faces]); "
                             "the result is pasted onto white with the face's mask, as photo2cartoon's authors do")
    parser.add_argument("--raw-output", action="store_true",
                        help="with faces prepared: keep the model's output as it is, not pasted onto white")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16"), default="auto",
                        help="fp16 on CUDA only (auto: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--model", default=None,
                        help="the checkpoint's model family (default: read from the checkpoint; checked if given)")
    group = parser.add_argument_group("multi-domain models (StarGAN v2)")
    group.add_argument("--target-domain", metavar="D", help="domain to translate into (a sub-folder name of the "
                                                            "training data)")
    group.add_argument("--reference", type=Path, metavar="IMG",
                       help="reference-guided: take the style from this picture (default: latent-guided)")
    group.add_argument("--seed", type=seed, default=None,
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


def plan(inputs: list[str], out: Path, tags: list[str], videos: bool = True) -> tuple[list[Job], int]:
    """Every job named by the inputs whose outputs (one per name tag) no earlier job writes;
    returns (jobs, inputs skipped). A file named twice is translated once."""
    jobs: list[Job] = []
    owners: dict[Path, Job] = {}
    skipped = 0
    for arg in inputs:
        try:
            expanded = _expand(arg, out.resolve())
        except UserError as exc:
            log.warning(f"skipping {arg}: {exc}")
            skipped += 1
            continue
        for job in expanded:
            if job.video and not videos:
                log.warning(f"skipping {job.source}: videos are not translated with multi-domain models")
                skipped += 1
                continue
            targets = job.targets(out, tags)
            taken = next((target for target in targets if target in owners), None)
            if taken is not None and owners[taken].source.resolve() == job.source.resolve():
                continue
            if taken is not None:
                log.warning(f"skipping {job.source}: its result {taken} is already {owners[taken].source}'s")
                skipped += 1
                continue
            owners.update(dict.fromkeys(targets, job))
            jobs.append(job)
    return jobs, skipped


def _tags(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(name tag of each style an input is translated in, every tag an input's outputs get):
    "" for the one translation of a two-domain model, StarGAN v2's per-style tags, "_heatmap"."""
    if args.target_domain is None:
        styles = [""]
    elif args.reference is not None:
        styles = [f"_{args.target_domain}_ref-{args.reference.stem}"]
    else:
        styles = [f"_{args.target_domain}_seed{args.seed or 0}_{k}" for k in range(args.num or 1)]
    return styles, styles + (["_heatmap"] if args.heatmap else [])


def _check_outputs(args: argparse.Namespace, translator, jobs: list[Job], tags: list[str]) -> guard.Made:
    """Refuse, before anything is written, outputs that would replace an input or a file of the user's."""
    made = guard.Made(args.out)
    model_files = [path for path in (translator.source, args.reference, args.fan_weights) if path is not None]
    guard.check([*model_files, *(job.source for job in jobs)],
                files=[target for job in jobs for target in job.targets(args.out, tags)], ours=made.owns)
    return made


# ----------------------------------------------------------------------------- opening the model


def _given(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    return {keyword: getattr(args, flag) for flag, keyword in flags.items() if getattr(args, flag) is not None}


def _check_flags(args: argparse.Namespace, model) -> None:
    """Refuse flags the checkpoint's family does not take, before anything is translated."""
    takes = {*model.load_options, *model.call_options}
    for flag, keyword in {**LOAD_FLAGS, **CALL_FLAGS}.items():
        if getattr(args, flag) is not None and keyword not in takes:
            raise UserError(f"--{flag.replace('_', '-')} does not apply to {args.checkpoint}, which holds a "
                            f"{model.name} model")
    if args.reference is not None and (args.num is not None or args.seed is not None):
        raise UserError("--reference takes the style from a picture; --num and --seed are for latent-guided "
                        "translation (leave out --reference)")


def _open(args: argparse.Namespace):
    """The translator the checkpoint (and --model) call for, every mistake refused before any input is read."""
    from ..inference.loading import identify, load_translator
    from ..models.registry import family

    found = identify(args.checkpoint, args.img_size)
    if args.model is not None and args.model != found.model:
        raise UserError(f"--model {args.model}, but {args.checkpoint} holds a {found.model} model")
    model = family(found.model)
    _check_flags(args, model)
    half = {"auto": None, "fp32": False, "fp16": True}[args.precision]
    translator = load_translator(found, device=args.device, half=half, img_size=args.img_size,
                                 **_given(args, LOAD_FLAGS))
    if args.raw_output and not _faces_prepared(translator, args.faces):
        raise UserError("--raw-output keeps the output of a prepared face as the model made it, but faces are not "
                        "prepared here (--faces on, or auto with a model trained on face crops)")
    if args.heatmap and not translator.has_attention:
        raise UserError(f"--heatmap: {args.checkpoint} holds a {model.name} model, which has no attention map")
    if "domain" in model.call_options and args.target_domain is None:
        raise UserError(f"{args.checkpoint} holds a {model.name} model: choose --target-domain D "
                        f"(one of {', '.join(translator.domains)})")
    if args.target_domain is not None:
        translator.domain_index(args.target_domain)
    return translator


# ----------------------------------------------------------------------------- translation

# Per picture of a batch (with the face crop its translations are pasted onto white with, or
# None), the (name tag, picture) pairs to write: "" for the translation itself.
Render = Callable[[list[Image.Image], list[FaceCrop | None]], list[list[tuple[str, Image.Image]]]]


def _renderer(translator, args: argparse.Namespace, styles: list[str]) -> tuple[Render, str]:
    """How a batch is translated and named (``styles``: the name tag of each style), and a
    description of it for the log."""
    call = _given(args, CALL_FLAGS)
    options = {"batch_size": args.batch_size, "fit": args.fit, "keep_size": args.keep_size}
    if "reference" in call:
        try:
            call["reference"] = load_rgb(args.reference)
        except DECODE_ERRORS as exc:
            raise UserError(f"--reference {args.reference}: not a readable image ({exc})") from None

    def render(images: list[Image.Image], crops: list[FaceCrop | None]) -> list[list[tuple[str, Image.Image]]]:
        grouped: list[list[tuple[str, Image.Image]]] = [[] for _ in images]
        for t in translator(images, **call, **options):
            crop = crops[t.source]
            grouped[t.source].append((styles[t.style], t.image if crop is None else crop.on_white(t.image)))
            if args.heatmap:
                grouped[t.source].append(("_heatmap", t.overlay()))
        return grouped

    if "domain" not in call:
        doing = f"with {translator.direction}"
    elif "reference" in call:
        doing = f"into domain {args.target_domain} in the style of {args.reference}"
    else:
        doing = f"into domain {args.target_domain}, {args.num or 1} output(s) each, seed {args.seed or 0}"
    return render, doing


def _faces_prepared(translator, mode: str) -> bool:
    return mode == "on" or (mode == "auto" and translator.face_crops)


def _face_preparer(translator, mode: str):
    """A FacePreparer when faces are to be cut out first (models trained on face crops), else None."""
    if not _faces_prepared(translator, mode):
        return contextlib.nullcontext()
    return FacePreparer(translator.img_size, "white")


def _translate_images(translator, render: Render, jobs: list[Job], args: argparse.Namespace, made: guard.Made,
                      progress: tqdm) -> int:
    """Translate image jobs a batch at a time; an unreadable file or one without a face is skipped."""
    done, batch = 0, translator.batch_for(args.batch_size)
    with _face_preparer(translator, args.faces) as faces:
        for start in range(0, len(jobs), batch):
            loaded = _load_batch(jobs[start:start + batch], faces, progress)
            done += _write_batch(render, loaded, args, made, progress)
    return done


def _load_batch(jobs: list[Job], faces, progress: tqdm) -> list[tuple[Job, Image.Image, FaceCrop | None]]:
    """(job, picture to translate, the face crop it is when faces are prepared) per readable job."""
    loaded = []
    for job in jobs:
        try:
            image = load_rgb(job.source)
            crop = faces.largest(image) if faces else None
            loaded.append((job, image if crop is None else crop.image, crop))
        except DECODE_ERRORS as exc:
            log.warning(f"skipping {job.source}: not a readable image ({exc})")
            progress.update()
        except UserError as exc:
            log.warning(f"skipping {job.source}: {exc}")
            progress.update()
    return loaded


def _write_batch(render: Render, loaded: list, args: argparse.Namespace, made: guard.Made, progress: tqdm) -> int:
    crops = [None if args.raw_output else crop for _, _, crop in loaded]
    results = render([image for _, image, _ in loaded], crops) if loaded else []
    for (job, _, _), outputs in zip(loaded, results):
        for tag, picture in outputs:
            made.add(save_png(np.asarray(picture), job.target(args.out, tag)))
        progress.update()
    return len(results)


def _translate_videos(translator, jobs: list[Job], args: argparse.Namespace, made: guard.Made, progress: tqdm) -> int:
    from ..video import translate_video

    done = 0
    for job in jobs:
        heatmap = job.target(args.out, "_heatmap") if args.heatmap else None
        try:
            result = translate_video(translator, job.source, job.target(args.out), heatmap_target=heatmap,
                                     batch_size=translator.batch_for(args.batch_size), fit=args.fit,
                                     keep_size=args.keep_size)
        except WriteError:
            raise  # the machine's fault (a full disk): stop, as for pictures
        except UserError as exc:
            log.warning(f"skipping {job.source}: {exc}")
        else:
            for written in filter(None, (job.target(args.out), heatmap)):
                made.add(written)
            audio = " (audio dropped)" if result.dropped_audio else ""
            log.info(f"{job.source} -> {job.target(args.out)}: {result.frames} frames at {result.rate} fps{audio}")
            done += 1
        progress.update()
    return done


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder")
    translator = _open(args)
    if translator.batch_for(args.batch_size) < args.batch_size:
        log.info(f"--batch-size {args.batch_size} runs as {translator.batch_for(args.batch_size)} per pass at "
                 f"{translator.img_size} px (at most {translator.max_batch_pixels} model pixels per pass)")
    styles, tags = _tags(args)
    render, doing = _renderer(translator, args, styles)
    jobs, skipped = plan(args.input, args.out, tags, videos=args.target_domain is None)
    made = _check_outputs(args, translator, jobs, tags)
    images = [job for job in jobs if not job.video]
    videos = [job for job in jobs if job.video]
    with logging_redirect_tqdm(), tqdm(total=len(jobs), unit="file", disable=None) as progress:
        done = _translate_images(translator, render, images, args, made, progress)
        done += _translate_videos(translator, videos, args, made, progress)
    skipped += len(jobs) - done
    if not done:
        reason = f"all {skipped} input(s) were skipped" if skipped else "no picture or video to translate outside --out"
        raise UserError(f"nothing translated: {reason}")
    log.info(f"translated {done} file(s) {doing}; results in {args.out}"
             + (f"; skipped {skipped}" if skipped else ""))
    return 0
