"""U-GAT-IT exactly as the official TensorFlow code (taki0112/UGATIT) computes it.

``bundle`` reads TF checkpoints without TensorFlow, ``official`` maps their variables onto
``networks``, ``train`` is the TF training iteration and ``data`` the TF pre-processing.
"""
