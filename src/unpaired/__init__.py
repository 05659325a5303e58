"""unpaired: unpaired image-to-image translation (U-GAT-IT, photo2cartoon, StarGAN v2)."""

__version__ = "0.1.0"
