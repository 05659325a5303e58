"""StarGAN v2: ``networks`` (G, F, E, D), ``fan`` (face masks), ``options``, ``data`` (multi-domain
folders and the training stream), ``train`` (losses, one official iteration, grids), ``recipe``,
``translate`` (latent- and reference-guided, ONNX export), ``evaluate`` (the official protocol)
and ``family``."""
