"""U-GAT-IT as the paper's official TensorFlow code computes it (taki0112/UGATIT), loading its real
checkpoints without TensorFlow: ``bundle`` and ``crc32c`` (TF's tensor-bundle files), ``official``
(TF variable names ↔ our state dicts), ``networks``, ``options``, ``data`` (TF pre-processing),
``train`` (the TF iteration), ``recipe`` and ``family``. Imports ugatit openly for what is the same
(translator, recipe base, options base)."""
