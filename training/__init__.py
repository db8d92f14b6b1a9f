"""Training of the mini-Xception on FER2013 (needs the ``train`` extra).

TensorFlow's environment must be set before TensorFlow is first imported, so it is set
here, when the package is imported, rather than in a note: on tensorflow-cpu 2.21 with
oneDNN's custom ops the mini-Xception's training died with a segfault or "double free or
corruption" at the end of its first epoch; with ``TF_ENABLE_ONEDNN_OPTS=0`` it trains
steadily. The cause, found on 2026-12-02: oneDNN crashes the mini-Xception's training step
(the backward pass; inference and training-mode forward passes are fine) on any batch of odd
size, and FER2013's 25,837 training faces leave a last batch of 45. Even batches were checked
for this network only, as built for 48x48 faces: a lone strided 1x1 convolution on a 46x46
map crashes on even batches too, which is why oneDNN stays off by default. A mini-Xception
run with ``TF_ENABLE_ONEDNN_OPTS=1`` takes an even batch size and leaves one face out of an
epoch of odd length (train.py). The VGG teacher never crashed with oneDNN, and trains with
it in 146-161 s an epoch instead of 223-272 s on 2 idle cores.
"""

import os
import sys
from collections.abc import Mapping

# Only an unset variable is ours to decide: whoever set it (to 1 for the faster VGG teacher)
# chose, and TensorFlow followed that choice whenever it was imported.
if "tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
    import warnings

    warnings.warn(
        "TensorFlow was imported before training/ could set TF_ENABLE_ONEDNN_OPTS=0, so it runs "
        "oneDNN; long training runs may crash. Import training first.",
        RuntimeWarning,
        stacklevel=2,
    )
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def onednn_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether TensorFlow runs oneDNN's custom ops: off only for "0" or "false" in any case, as
    TensorFlow reads the variable (training/ sets it to "0" when unset); any other value, even
    " 0", TensorFlow takes as its default, which is on."""
    return environ.get("TF_ENABLE_ONEDNN_OPTS", "0").lower() not in ("0", "false")


def prog_name(module: str, script: str) -> str:
    """The command as the user typed it, for usage lines and messages: ``script`` (the console
    script, e.g. fer-kiosk-train) when run as that, else ``python -m module``."""
    typed = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if typed == script else f"python -m {module}"


def missing_train_extra(prog: str) -> str | None:
    """One line saying what to install when TensorFlow or Keras is absent (the base install
    is the kiosk's and has neither), else None."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a broken or blocked install counts as absent
            return True

    missing = [name for name in ("tensorflow", "keras") if absent(name)]
    if not missing:
        return None
    return (
        f"error: {prog} needs {' and '.join(missing)}, which the base install leaves out: "
        "pip install 'fer-kiosk[train]'"
    )
