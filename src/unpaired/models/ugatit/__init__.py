"""U-GAT-IT as the official PyTorch code builds it: ``networks``, ``options``, ``data``, ``train``
(one official iteration), ``recipe`` (what the training loop asks), ``translate`` (one generator
with its heatmaps, also used by photo2cartoon and the TF-exact variant), ``official`` (the
official .pt files) and ``family`` (its registry entry)."""
