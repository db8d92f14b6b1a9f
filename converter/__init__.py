"""Keras -> TFLite conversion with its model contract (needs the ``train`` extra)."""

# Before convert.py's Keras and TensorFlow: training/ sets TensorFlow's environment
# (TF_ENABLE_ONEDNN_OPTS=0), which counts only before TensorFlow is first imported.
import training  # noqa: F401

# Here rather than in convert.py, so that ``--help`` works without TensorFlow.
FORMATS = ("float32", "float16", "dynamic", "int8")
