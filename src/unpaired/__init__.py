"""unpaired: unpaired image-to-image translation (U-GAT-IT, photo2cartoon, StarGAN v2)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from unpaired import Translator`` without importing torch for ``import unpaired.errors``."""
    if name in ("Translator", "StarGANv2Translator"):
        from . import translate
        return getattr(translate, name)
    raise AttributeError(f"module 'unpaired' has no attribute {name!r}")
