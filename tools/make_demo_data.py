"""Build the small demo data set shipped inside the package (src/unpaired/demo_data/emoji64).

The full emoji data set (OpenMoji -> Fluent Emoji, 64x64) is ~17 MB with both sizes; the
package only needs enough to train a smoke-test model offline, so this script takes a
deterministic, evenly spread subset of the 64x64 images. Running it twice gives identical
files, so the subset can be rebuilt and reviewed instead of being an opaque blob.

Usage: python tools/make_demo_data.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/work/shared/data/emoji_openmoji2fluent")
DEFAULT_OUT = REPO / "src" / "unpaired" / "demo_data" / "emoji64"
SIZE_FOLDER = "64x64"
TRAIN_COUNT = 240
TEST_PAIRS = 40
GENERATED = ("trainA", "trainB", "testA", "testB", "pairs.csv", "README.md", "manifest.json")


def spread(items: list, count: int) -> list:
    """Pick `count` items evenly across a sorted list, so the subset spans every category
    (the sorted emoji list is grouped by code point: a prefix would be all keycaps)."""
    if count > len(items):
        sys.exit(f"need {count} items but the source has only {len(items)}")
    return [items[i * len(items) // count] for i in range(count)]


def pick_train(source: Path, domain: str) -> list[str]:
    """File names of the training images kept for one domain."""
    names = sorted(p.name for p in (source / domain).iterdir() if p.suffix == ".png")
    return spread(names, TRAIN_COUNT)


def pick_pairs(source: Path) -> tuple[list[str], list[dict]]:
    """The kept rows of pairs.csv (columns a,b,... with paths relative to the size folder)."""
    with open(source / "pairs.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = sorted(reader, key=lambda row: row["a"])
        return list(reader.fieldnames or []), spread(rows, TEST_PAIRS)


def copy_images(source: Path, out: Path, domain: str, names: list[str]) -> None:
    """Copy the chosen images byte for byte (no re-encoding, so nothing changes)."""
    (out / domain).mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / domain / name, out / domain / name)


def write_pairs(out: Path, header: list[str], rows: list[dict]) -> None:
    """pairs.csv for the kept test pairs, same columns as the source."""
    with open(out / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def subset_note(counts: dict[str, int]) -> str:
    """How this subset was chosen, for the README and the manifest."""
    return (
        f"Subset of the {SIZE_FOLDER} images: {counts['trainA']} trainA, {counts['trainB']} trainB "
        f"and {counts['testA']} test pairs, each an even spread over the file names sorted "
        f"(test pairs: rows of pairs.csv sorted by column a). Files are copied unchanged. "
        f"Built by tools/make_demo_data.py."
    )


def write_readme(source: Path, out: Path, counts: dict[str, int]) -> None:
    """README: a subset notice, then the original README verbatim (it carries every
    attribution and licence line, which CC-BY-SA requires us to keep)."""
    original = (source / "README.md").read_text(encoding="utf-8")
    text = (
        "# Demo data: emoji64 (subset of the OpenMoji -> Fluent Emoji data set)\n\n"
        "This folder is a small SUBSET of the data set described below, shipped with the\n"
        "`unpaired` package for offline demos and tests. The licences and attributions below\n"
        "apply unchanged: domain A (OpenMoji) images are CC-BY-SA-4.0, domain B (Fluent Emoji)\n"
        "images are MIT.\n\n"
        f"{subset_note(counts)}\n\n"
        "## Original README of the full data set (verbatim)\n\n"
        f"{original}"
    )
    (out / "README.md").write_text(text, encoding="utf-8")


def write_manifest(source: Path, out: Path, counts: dict[str, int]) -> None:
    """The source manifest unchanged, plus a `demo_subset` entry describing this subset."""
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest["demo_subset"] = {
        "size_folder": SIZE_FOLDER,
        "counts": counts,
        "selection": subset_note(counts),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def clear_previous(out: Path) -> None:
    """Remove only what an earlier run generated, never anything else in `out`."""
    for name in GENERATED:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def build(source_root: Path, out: Path) -> dict[str, int]:
    """Build the demo folder and return the image count per domain."""
    source = source_root / SIZE_FOLDER
    header, rows = pick_pairs(source)
    test_names = [Path(row["a"]).name for row in rows]
    chosen = {
        "trainA": pick_train(source, "trainA"),
        "trainB": pick_train(source, "trainB"),
        "testA": test_names,
        "testB": test_names,
    }
    clear_previous(out)
    for domain, names in chosen.items():
        copy_images(source, out, domain, names)
    write_pairs(out, header, rows)
    counts = {domain: len(names) for domain, names in chosen.items()}
    write_readme(source_root, out, counts)
    write_manifest(source_root, out, counts)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="full emoji data set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="demo folder to (re)build")
    args = parser.parse_args()
    if not (args.source / SIZE_FOLDER / "pairs.csv").is_file():
        sys.exit(f"{args.source} is not the emoji data set (no {SIZE_FOLDER}/pairs.csv)")
    counts = build(args.source, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out}: {counts}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
