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
    translators = {direction: load_translator(found, direction=direction, device=device) for direction in SOURCES}
    sets = {direction: NamedImageDataset(list_images(data / folder), ResizeTransform(translators[direction].img_size),
                                         root=data / folder) for direction, folder in SOURCES.items()}
    targets = [out / direction / kind / Path(name).with_suffix(".png") for direction, dataset in sets.items()
               for name in dataset.names for kind in KINDS]
    guard.check([found.file, *(data / folder for folder in SOURCES.values())], files=targets, ours=made.owns)
    for direction, dataset in sets.items():
        batch = translators[direction].batch_for(batch_size)  # memory bounded as in translate
        for start in range(0, len(dataset), batch):
            items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
            batch = torch.stack([tensor for tensor, _ in items])
            images, heatmaps = translators[direction].translate_tensor(batch)
            for (real, name), image, heatmap in zip(items, images.cpu(), heatmaps.cpu()):
                fake, real_u8 = to_uint8_image(image), to_uint8_image(real)
                hm = colorize_heatmap(heatmap, real.shape[-1])
                for kind, picture in zip(KINDS, (fake, hm, make_grid([real_u8, hm, fake]))):
                    made.add(save_png(picture, out / direction / kind / Path(name).with_suffix(".png")))
        log.info(f"{direction}: {len(dataset)} test images → {out / direction}")
    return out
