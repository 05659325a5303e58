"""``unpaired test``: translate a run's testA→B and testB→A with its newest checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "translate the test sets of a run (testA→B, testB→A): translation, heatmap and side-by-side per image"
log = logging.getLogger("unpaired")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=Path, required=True, help="run directory made by `unpaired train`")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the one the run was trained on)")
    parser.add_argument("--out", type=Path, help="where to write (default: RUN/test)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def translate_test_sets(run: Path, data: Path | None = None, out: Path | None = None, batch_size: int = 8,
                        device: str = "auto") -> Path:
    """Write OUT/{A2B,B2A}/{translated,heatmap,side_by_side}/<name>.png for every test image."""
    import torch
    from torch.utils.data import DataLoader

    from ..config import read_yaml_mapping
    from ..data import open_dataset
    from ..errors import UserError
    from ..translate import Translator
    from ..viz import colorize_heatmap, save_png, side_by_side, to_uint8_image

    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a run directory (no config.yaml)")
    data = data or Path(read_yaml_mapping(run / "config.yaml")["data"])
    out = out or run / "test"
    for direction in ("A2B", "B2A"):
        translator = Translator.from_checkpoint(run, direction=direction, device=device)
        source = open_dataset(data, translator.img_size)
        dataset = source.test_a if direction == "A2B" else source.test_b
        for batch, names in DataLoader(dataset, batch_size=batch_size):
            with torch.inference_mode():
                images, heatmaps = translator.translate_tensor(batch.to(translator.device))
            for real, image, heatmap, name in zip(batch, images.cpu(), heatmaps.cpu(), names):
                stem = Path(name).with_suffix(".png")
                fake, real_u8 = to_uint8_image(image), to_uint8_image(real)
                hm = colorize_heatmap(heatmap, real.shape[-1])
                save_png(fake, out / direction / "translated" / stem)
                save_png(hm, out / direction / "heatmap" / stem)
                save_png(side_by_side([real_u8, hm, fake]), out / direction / "side_by_side" / stem)
        log.info(f"{direction}: {len(dataset)} test images → {out / direction}")
    return out


def run(args: argparse.Namespace) -> int:
    translate_test_sets(args.run, args.data, args.out, args.batch_size, args.device)
    return 0
