"""unpaired: unpaired image-to-image translation (U-GAT-IT, photo2cartoon, StarGAN v2)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from unpaired import Translator`` without importing torch for ``import unpaired.errors``."""
    if name == "Translator":
        from .translate import Translator
        return Translator
    raise AttributeError(f"module 'unpaired' has no attribute {name!r}")
