"""photo2cartoon: U-GAT-IT's variant for face cartoons. Reuses U-GAT-IT's discriminators, data,
grids, evaluation and translator openly (``from ..ugatit``); holds its own ``networks``
(hourglasses, Soft-AdaLIN), ``mobilefacenet`` (the face-ID embedder), ``options``, ``train``,
``recipe``, ``official`` (the authors' files) and ``family``."""
