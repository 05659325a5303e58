"""Argument types shared by the subcommands, checked by the rules of ``options`` (the flags of
``unpaired train`` and its YAML values obey the same): argparse shows the one-line message."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import options as opt

KINDS = {int: "a whole number", float: "a number"}


def checked(kind: type, **bounds: float) -> Callable[[str], Any]:
    """An argparse type: the text as ``kind`` (int or float), finite and within ``bounds``
    (``minimum``, ``maximum``, ``above``, as ``options.option`` takes them)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {KINDS[kind]}, got {text!r}") from None
        try:
            return opt.checked(value, kind, bounds)
        except opt.Invalid as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = KINDS[kind]  # what argparse names in its own messages
    return parse


positive_int = checked(int, minimum=1)
positive_float = checked(float, above=0)
port_number = checked(int, minimum=0, maximum=65535)  # 0: any free port
seed = checked(int, minimum=0, maximum=opt.MAX_SEED)
image_size = checked(int, minimum=1, maximum=opt.MAX_IMG_SIZE)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
