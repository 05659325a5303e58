"""Inference: load any model file (``loading.load_translator``), fit pictures to the model's
square (``pictures``), run on torch or onnxruntime (``backends``), the one result type
(``translator``), ONNX export (``onnx``) and the test phase (``test_phase``)."""
