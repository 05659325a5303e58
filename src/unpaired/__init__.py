"""unpaired: unpaired image-to-image translation (U-GAT-IT, photo2cartoon, StarGAN v2).

``unpaired.load_translator(path)`` opens any model file (run folder, .safetensors, official
checkpoint, exported .onnx) as its family's translator; every translator returns a
``TranslationOutput``. Names are imported on first use, so ``import unpaired`` loads no torch.
"""

__version__ = "0.2.0"

__all__ = ["Translation", "TranslationOutput", "Translator", "UserError", "load_translator"]

_WHERE = {
    "load_translator": "unpaired.inference.loading",
    "Translator": "unpaired.inference.translator",
    "Translation": "unpaired.inference.translator",
    "TranslationOutput": "unpaired.inference.translator",
    "UserError": "unpaired.errors",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'unpaired' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
