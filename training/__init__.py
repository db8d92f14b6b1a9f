"""Training of the mini-Xception on FER2013 (needs the ``train`` extra).

TensorFlow's environment must be set before TensorFlow is first imported, so it is set
here, when the package is imported, rather than in a note: on tensorflow-cpu 2.21 with
oneDNN's custom ops a full epoch of this model died with a segfault or "double free or
corruption" on the reference machine (2 cores); with ``TF_ENABLE_ONEDNN_OPTS=0`` it trains
steadily.
"""

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
    import warnings

    warnings.warn(
        "TensorFlow was imported before training/ could set TF_ENABLE_ONEDNN_OPTS=0; "
        "long training runs may crash. Import training first.",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def missing_train_extra(prog: str) -> str | None:
    """One line saying what to install when TensorFlow or Keras is absent (the base install
    is the kiosk's and has neither), else None."""
    import importlib.util

    missing = [name for name in ("tensorflow", "keras") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"error: {prog} needs {' and '.join(missing)}, which the base install leaves out: "
        "pip install 'fer-kiosk[train]'"
    )
