"""The registry: model family name -> ``ModelFamily``, the one door to the families.

Families are imported when first asked for, so listing names costs nothing and a family's
dependencies load only when it is used.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from .contract import ModelFamily


def _ugatit() -> ModelFamily:
    from .ugatit.family import FAMILY
    return FAMILY


def _photo2cartoon() -> ModelFamily:
    from .photo2cartoon.family import FAMILY
    return FAMILY


def _ugatit_tf() -> ModelFamily:
    from .ugatit_tf.family import FAMILY
    return FAMILY


def _stargan_v2() -> ModelFamily:
    from .stargan_v2.family import FAMILY
    return FAMILY


FAMILIES: dict[str, Callable[[], ModelFamily]] = {
    "ugatit": _ugatit,
    "photo2cartoon": _photo2cartoon,
    "ugatit_tf": _ugatit_tf,
    "stargan_v2": _stargan_v2,
}
DEFAULT = "ugatit"


def names() -> list[str]:
    return list(FAMILIES)


def family(name: str) -> ModelFamily:
    """The family called ``name``; a one-line error naming the known ones otherwise."""
    if name not in FAMILIES:
        raise UserError(f"unknown model {name!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]()


def families() -> list[ModelFamily]:
    return [family(name) for name in FAMILIES]
