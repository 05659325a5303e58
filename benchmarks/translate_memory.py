"""Peak memory of translating photos with a U-GAT-IT generator, one fresh process per configuration.

Each configuration translates ``--pictures`` random photos of ``--photo`` pixels (default eight
4K frames, 3840×2160) with ``keep_size`` (results at the photos' own size), through the
``TwoDomainTranslator`` that ``unpaired translate`` and ``serve`` use, asking for
``--batch-sizes`` pictures per forward pass; ``capped`` applies the translator's pixel budget
(``inference.translator.MAX_BATCH_PIXELS``), ``uncapped`` runs the requested batch as it is.
Reported: the peak resident set (VmHWM; on a GPU the peak allocated memory), the resident set
once the generator is loaded (``loaded``), the batch that ran, seconds per picture after one
warm-up call. Weights are random: memory and time do not depend on them.

    python benchmarks/translate_memory.py                         # light at 512 and 1024 px, full at 256
    python benchmarks/translate_memory.py --cases light:1024 --batch-sizes 1,8 --caps capped,uncapped
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import fresh_process
from fresh_process import peak_gib, rss_gib


def measure(config: dict) -> dict:
    """Translate ``config``'s photos twice in this process (warm-up, timed); its row."""
    import numpy as np
    import torch
    from PIL import Image

    from unpaired.inference.backends import TorchBackend
    from unpaired.models.ugatit.networks import build_generator
    from unpaired.models.ugatit.options import UGATITArch
    from unpaired.models.ugatit.translate import ImageAndHeatmap, TwoDomainTranslator
    from unpaired.runtime import resolve_device

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    baseline = rss_gib()
    arch = UGATITArch(light=config["variant"] == "light", img_size=config["img_size"], ch=config["ch"],
                      n_res=config["n_res"])
    with torch.no_grad():
        module = ImageAndHeatmap(build_generator(arch).eval())
    translator = TwoDomainTranslator(TorchBackend(module, device, half=False), model="ugatit", arch=arch,
                                     direction="A2B", source=Path("random weights"))
    if config["cap"] == "uncapped":
        translator.max_batch_pixels = None
    loaded = rss_gib()
    width, height = config["photo"]
    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
              for _ in range(config["pictures"])]
    translator(photos[:1], batch_size=config["batch"], keep_size=True)
    start = time.perf_counter()
    translator(photos, batch_size=config["batch"], keep_size=True)
    seconds = (time.perf_counter() - start) / len(photos)
    return {**config, "peak_gib": peak_gib(device), "baseline_gib": 0.0 if device.type == "cuda" else baseline,
            "loaded_gib": loaded, "ran_batch": translator.batch_for(config["batch"]), "s_per_picture": seconds}


def configs(args) -> list[dict]:
    width, height = (int(x) for x in args.photo.split("x"))
    out = []
    for case in args.cases.split(","):
        variant, size = case.split(":")
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for cap in args.caps.split(","):
                out.append({"variant": variant, "img_size": int(size), "batch": batch, "cap": cap, "ch": args.ch,
                            "n_res": args.n_res, "photo": [width, height], "pictures": args.pictures,
                            "device": args.device, "threads": args.threads})
    return out


def print_rows(rows: list[dict]) -> None:
    print(f"{'variant':7s} {'px':>5s} {'batch':>5s} {'cap':9s} {'ran':>4s} {'loaded':>7s} {'peak GiB':>9s} "
          f"{'s/picture':>9s}  status")
    for r in rows:
        ok = r.get("status") == "ok"
        print(f"{r['variant']:7s} {r['img_size']:5d} {r['batch']:5d} {r['cap']:9s} {r.get('ran_batch', '?'):>4} "
              f"{r.get('loaded_gib', float('nan')):7.2f} {r['peak_gib']:9.2f} "
              f"{r['s_per_picture'] if ok else float('nan'):9.2f}  {r['status']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="full:256,light:512,light:1024", help="comma-separated VARIANT:SIZE")
    parser.add_argument("--batch-sizes", default="8", help="requested pictures per forward pass, comma-separated")
    parser.add_argument("--caps", default="uncapped,capped", help="comma-separated: capped, uncapped")
    parser.add_argument("--photo", default="3840x2160", help="WIDTHxHEIGHT of each photo")
    parser.add_argument("--pictures", type=int, default=8)
    parser.add_argument("--ch", type=int, default=64)
    parser.add_argument("--n-res", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rss-limit-gib", type=float, default=16.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fresh_process.child_main(measure, args.child)
        return
    rows = []
    for config in configs(args):
        print(f"{config['variant']} {config['img_size']} px, batch {config['batch']}, {config['cap']}:",
              file=sys.stderr, flush=True)
        rows.append(fresh_process.run(__file__, config, args.rss_limit_gib))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print_rows(rows)


if __name__ == "__main__":
    main()
