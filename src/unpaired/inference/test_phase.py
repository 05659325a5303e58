"""``unpaired test``: a run's testA→B and testB→A translations, as the official test phase writes them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..data.images import NamedImageDataset, ResizeTransform, list_images
from ..errors import UserError
from ..run import RunDir
from ..viz import colorize_heatmap, make_grid, save_png, to_uint8_image
from .loading import load_translator

log = logging.getLogger("unpaired")
SOURCES = {"A2B": "testA", "B2A": "testB"}


def translate_test_sets(run: Path | str, data: Path | None = None, out: Path | None = None, batch_size: int = 8,
                        device: str = "auto") -> Path:
    """Write OUT/{A2B,B2A}/{translated,heatmap,side_by_side}/<name>.png for every test image
    (OUT defaults to RUN/test; the data to the run's own) and return OUT."""
    run = RunDir(run)
    if not run.root.is_dir():
        raise UserError(f"run folder {run.root} does not exist")
    if not run.is_run():
        raise UserError(f"{run.root} is not a run directory (no config.yaml): give the folder `unpaired train --out` made")
    checkpoint = run.require_checkpoint()
    data = Path(data) if data is not None else run.data()
    out = Path(out) if out is not None else run.test
    for direction, folder in SOURCES.items():
        translator = load_translator(checkpoint, direction=direction, device=device)
        dataset = NamedImageDataset(list_images(data / folder), ResizeTransform(translator.img_size),
                                    root=data / folder)
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = torch.stack([tensor for tensor, _ in items])
            images, heatmaps = translator.translate_tensor(batch)
            for (real, name), image, heatmap in zip(items, images.cpu(), heatmaps.cpu()):
                stem = Path(name).with_suffix(".png")
                fake, real_u8 = to_uint8_image(image), to_uint8_image(real)
                hm = colorize_heatmap(heatmap, real.shape[-1])
                save_png(fake, out / direction / "translated" / stem)
                save_png(hm, out / direction / "heatmap" / stem)
                save_png(make_grid([real_u8, hm, fake]), out / direction / "side_by_side" / stem)
        log.info(f"{direction}: {len(dataset)} test images → {out / direction}")
    return out
