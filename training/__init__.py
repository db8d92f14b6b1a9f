"""Training of the mini-Xception on FER2013 (needs the ``train`` extra).

TensorFlow's environment must be set before TensorFlow is first imported, so it is set
here, when the package is imported, rather than in a note: on tensorflow-cpu 2.21 with
oneDNN's custom ops the mini-Xception's training dies with a segfault or "double free or
corruption" in its first epoch (2 cores; seen again on 2026-12-02, exit 139 twice in two
tries); with ``TF_ENABLE_ONEDNN_OPTS=0`` it trains steadily. It is only a default: the VGG
teacher trains with ``TF_ENABLE_ONEDNN_OPTS=1`` in about 150 s an epoch instead of 230-270 s,
and has not crashed (docs/model.md).
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


def onednn_warning(architecture: str, environ=os.environ) -> str | None:
    """What to tell whoever trains the mini-Xception with oneDNN switched back on (it crashes,
    see above); None when it is off or the network is another."""
    value = environ.get("TF_ENABLE_ONEDNN_OPTS", "0").strip().lower()
    if architecture != "mini_xception" or value in ("0", "false"):
        return None
    return (
        f"TF_ENABLE_ONEDNN_OPTS={environ['TF_ENABLE_ONEDNN_OPTS']}: the mini-Xception's training has "
        "crashed with oneDNN on (segfault in the first epoch); unset it if this run dies. It helps "
        "the VGG teacher (--architecture vgg) only"
    )


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
