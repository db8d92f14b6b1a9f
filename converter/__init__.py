"""Keras -> TFLite conversion with its model contract (needs the ``train`` extra)."""

# Here rather than in convert.py, so that ``--help`` works without TensorFlow.
FORMATS = ("float32", "float16", "dynamic", "int8")
