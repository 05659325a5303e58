"""``unpaired test``: a run's testA→B and testB→A translations, as the official test phase writes them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import guard
from ..data.images import NamedImageDataset, ResizeTransform, list_images
from ..errors import UserError
from ..run import RunDir
from ..viz import colorize_heatmap, make_grid, save_png, to_uint8_image
from .loading import load_translator, run_checkpoint

log = logging.getLogger("unpaired")
SOURCES = {"A2B": "testA", "B2A": "testB"}
KINDS = ("translated", "heatmap", "side_by_side")  # the sub-folders of each direction


def translate_test_sets(run: Path | str, data: Path | None = None, out: Path | None = None, batch_size: int = 8,
                        device: str = "auto") -> Path:
    """Write OUT/{A2B,B2A}/{translated,heatmap,side_by_side}/<name>.png for every test image
    (OUT defaults to RUN/test; the data to the run's own) and return OUT.

    ``batch_size`` pictures go through one forward pass, fewer at large sizes (``Translator.batch_for``).
    Nothing is written before every output has been checked (``guard``): an explicit OUT may
    hold files of the user's, which are never replaced.
    """
    run = RunDir(run)
    if not run.root.is_dir():
        raise UserError(f"run folder {run.root} does not exist")
    if not run.is_run():
        raise UserError(f"{run.root} is not a run directory (no config.yaml): give the folder `unpaired train --out` made")
    found = run_checkpoint(run)
    data = Path(data) if data is not None else run.data()
    made = guard.Made(out) if out is not None else guard.Made(run.test, whole=True)
    out = made.folder
    first = next(iter(SOURCES))
    translator = load_translator(found, direction=first, device=device)
    # One checkpoint: both directions translate at its size. One generator is in memory at a time.
    sets = {direction: NamedImageDataset(list_images(data / folder), ResizeTransform(translator.img_size),
                                         root=data / folder) for direction, folder in SOURCES.items()}
    targets = [out / direction / kind / Path(name).with_suffix(".png") for direction, dataset in sets.items()
               for name in dataset.names for kind in KINDS]
    guard.check([found.file, *(data / folder for folder in SOURCES.values())], files=targets, ours=made.owns)
    for direction, dataset in sets.items():
        if direction != first:
            del translator
            translator = load_translator(found, direction=direction, device=device)
        _translate_set(translator, dataset, out / direction, made, batch_size)
        log.info(f"{direction}: {len(dataset)} test images → {out / direction}")
    return out


def _translate_set(translator, dataset: NamedImageDataset, out: Path, made: guard.Made, batch_size: int) -> None:
    """OUT/{translated,heatmap,side_by_side}/<name>.png for every picture of ``dataset``, a batch
    at a time (memory bounded as in translate: ``Translator.batch_for``)."""
    per_pass = translator.batch_for(batch_size)
    for start in range(0, len(dataset), per_pass):
        items = [dataset[i] for i in range(start, min(start + per_pass, len(dataset)))]
        images, heatmaps = translator.translate_tensor(torch.stack([tensor for tensor, _ in items]))
        for (real, name), image, heatmap in zip(items, images.cpu(), heatmaps.cpu()):
            fake, real_u8 = to_uint8_image(image), to_uint8_image(real)
            hm = colorize_heatmap(heatmap, real.shape[-1])
            for kind, picture in zip(KINDS, (fake, hm, make_grid([real_u8, hm, fake]))):
                made.add(save_png(picture, out / kind / Path(name).with_suffix(".png")))
