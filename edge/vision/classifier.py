"""Emotion classification with the TFLite interpreter (LiteRT; never TensorFlow).

The classifier refuses a model whose file, contract and interpreter disagree, and says
what differs: a wrong hash means the .tflite is not the file the contract describes
(corrupt or replaced); a shape, type or quantization mismatch means the contract was
written for another model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.contract import ContractError, ModelContract, Quantization, View, file_sha256, load_contract
from edge.vision.arrays import all_views, apply_view, average_views, dequantize, quantize
from edge.vision.calibration import calibrate
from edge.vision.preprocess import normalize_faces

_LOGGER = logging.getLogger(__name__)


class RuntimeMissingError(ContractError, ImportError):
    """No TFLite runtime, or one that cannot run here: a ContractError (exit 78), in one line
    naming the versions and the fix. Still an ImportError for callers that caught that."""


# What NumPy and the C API print when a module built against NumPy 1.x (tflite-runtime <= 2.14)
# is loaded beside NumPy 2: a warning, "_ARRAY_API not found", then a SystemError.
_NUMPY_ABI_SIGNS = ("compiled using NumPy 1.x", "_ARRAY_API not found", "multiarray failed to import")
# 32-bit ARM's set (the dependency markers in pyproject.toml).
_NUMPY1_FIX = "'numpy<2' 'opencv-python-headless>=4.8,<4.12'"


def _where() -> str:
    return f"NumPy {np.__version__}, Python {platform.python_version()} on {platform.machine()}"


def runtime_failure(runtime: str, err: BaseException, printed: str = "") -> RuntimeMissingError:
    """One line for a runtime that will not load or run: what, the versions, and the fix.
    ``printed``: what the failed call wrote to stderr (NumPy's ABI warning goes there)."""
    chain, cause = [], err
    while cause is not None and len(chain) < 5:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = printed + "\n" + "\n".join(chain)
    pip = f"{sys.executable} -m pip install"
    if any(sign in text for sign in _NUMPY_ABI_SIGNS):
        return RuntimeMissingError(
            f"{runtime} was built against NumPy 1.x and cannot run with NumPy {np.__version__} "
            f"(Python {platform.python_version()} on {platform.machine()}): {pip} {_NUMPY1_FIX}"
        )
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    return RuntimeMissingError(
        f"{runtime} cannot run here ({type(err).__name__}: {first[:200]}; {_where()}): "
        f"reinstall it ({pip} --force-reinstall ai-edge-litert, or tflite-runtime on 32-bit ARM; "
        "docs/deploy.md)"
    )


@contextlib.contextmanager
def _stderr_kept(printed: io.StringIO):
    """Python-level stderr into ``printed`` (NumPy's multi-line ABI warning would otherwise
    precede the one line); given back when the call succeeds."""
    with contextlib.redirect_stderr(printed):
        yield
    sys.stderr.write(printed.getvalue())


# What the runtime's C++ prints on stderr, in its own format, when it applies its default
# delegate to every model (every command, every test): news to nobody, so never shown.
RUNTIME_CHATTER = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def _runtime_chatter_dropped():
    """The process's own stderr (file descriptor 2, where C++ writes) into a file while the
    interpreter is built; afterwards everything it said but ``RUNTIME_CHATTER`` is written to
    Python's stderr, so warnings and errors still show (and ``_stderr_kept`` sees them)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to take over: nothing is printed anyway
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            said = captured.read().decode("utf-8", "replace")
            kept = [line for line in said.splitlines(keepends=True) if line.strip() not in RUNTIME_CHATTER]
            if kept:
                sys.stderr.write("".join(kept))


def _installed(distribution: str, module: str) -> str:
    """``distribution`` with its version where it can be found (for a runtime that failed)."""
    version = getattr(sys.modules.get(module), "__version__", None)
    if version is None:
        from importlib import metadata

        with contextlib.suppress(metadata.PackageNotFoundError):
            version = metadata.version(distribution)
    return f"{distribution} {version}" if version else distribution


def load_interpreter_class() -> tuple[type, str]:
    """The TFLite Interpreter class and the runtime's name and version."""
    printed = io.StringIO()
    try:
        with _stderr_kept(printed):
            import ai_edge_litert
            from ai_edge_litert import interpreter as litert

        return litert.Interpreter, f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}"
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("ai_edge_litert"):
            raise runtime_failure(
                _installed("ai-edge-litert", "ai_edge_litert"), err, printed.getvalue()
            ) from err
    except (ImportError, SystemError, OSError) as err:  # installed, but broken here
        raise runtime_failure(
            _installed("ai-edge-litert", "ai_edge_litert"), err, printed.getvalue()
        ) from err
    try:
        with _stderr_kept(printed):
            import tflite_runtime
            from tflite_runtime import interpreter as tflite

        return tflite.Interpreter, f"tflite-runtime {getattr(tflite_runtime, '__version__', '?')}"
    except ModuleNotFoundError as err:
        if (err.name or "").startswith("tflite_runtime"):
            raise RuntimeMissingError(
                f"no TFLite runtime is installed ({_where()}): {sys.executable} -m pip install "
                "ai-edge-litert (64-bit ARM, x86-64), or tflite-runtime==2.14.* with "
                f"{_NUMPY1_FIX} on 32-bit ARM (docs/deploy.md)"
            ) from err
        raise runtime_failure(
            _installed("tflite-runtime", "tflite_runtime"), err, printed.getvalue()
        ) from err
    except (ImportError, SystemError, OSError) as err:
        raise runtime_failure(
            _installed("tflite-runtime", "tflite_runtime"), err, printed.getvalue()
        ) from err


def tensor_quantization(details: dict[str, Any]) -> Quantization | None:
    """(scale, zero point) of an interpreter tensor, or None for a float tensor."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    return Quantization(float(scale), int(zero_point)) if scale else None


def contract_mismatches(contract: ModelContract, input_details: dict, output_details: dict) -> list[str]:
    """What differs between a contract and the interpreter's tensors (empty when they agree)."""
    problems = []
    shape = tuple(int(v) for v in input_details["shape"])
    if shape[1:] != tuple(contract.input_shape[1:]):
        problems.append(f"input shape: model {list(shape)}, contract {list(contract.input_shape)}")
    dtype = np.dtype(input_details["dtype"]).name
    if dtype != contract.input_dtype:
        problems.append(f"input type: model {dtype}, contract {contract.input_dtype}")
    out_dtype = np.dtype(output_details["dtype"]).name
    if out_dtype != contract.output_dtype:
        problems.append(f"output type: model {out_dtype}, contract {contract.output_dtype}")
    n_out = int(output_details["shape"][-1])
    if n_out != len(contract.labels):
        problems.append(f"outputs: model {n_out} classes, contract {len(contract.labels)} labels")
    for name, details, expected in (
        ("input", input_details, contract.input_quantization),
        ("output", output_details, contract.output_quantization),
    ):
        actual = tensor_quantization(details)
        if (actual is None) != (expected is None) or (
            actual is not None
            and (
                abs(actual.scale - expected.scale) > 1e-6 * max(1.0, expected.scale)
                or actual.zero_point != expected.zero_point
            )
        ):
            problems.append(f"{name} quantization: model {actual}, contract {expected}")
    return problems


class EmotionClassifier:
    """Probabilities over the contract's labels for 48x48 uint8 face crops."""

    def __init__(
        self,
        model_path: str | Path,
        num_threads: int = 1,
        verify_hash: bool = True,
        views: tuple[View, ...] | None = None,
    ):
        """``views``: test-time views to average instead of the contract's own."""
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ContractError(f"model file {self.model_path} not found")
        self.contract = load_contract(self.model_path)
        if views is not None:
            self.contract = replace(self.contract, views=views)
        if verify_hash:
            digest = file_sha256(self.model_path)
            if digest != self.contract.sha256:
                raise ContractError(
                    f"{self.model_path} does not match its contract: sha256 {digest[:12]}..., "
                    f"contract says {self.contract.sha256[:12]}... (file corrupt or replaced)"
                )
        interpreter_class, self.runtime = load_interpreter_class()
        printed = io.StringIO()
        try:
            with _stderr_kept(printed), _runtime_chatter_dropped():
                model = str(self.model_path)
                self._interpreter = interpreter_class(model_path=model, num_threads=num_threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ContractError(f"{self.model_path} cannot be loaded by {self.runtime}: {err}") from err
        except (SystemError, ImportError) as err:  # the runtime itself cannot run here
            raise runtime_failure(self.runtime, err, printed.getvalue()) from err
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        problems = contract_mismatches(self.contract, self._input, self._output)
        if problems:
            raise ContractError(f"{self.model_path} disagrees with its contract: " + "; ".join(problems))
        self._batch = int(self._input["shape"][0])
        _LOGGER.info("loaded %s (%s, %s)", self.model_path.name, self.contract.model_format, self.runtime)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            shape = [n, *self.contract.input_shape[1:]]
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._output = self._interpreter.get_output_details()[0]
            self._batch = n

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, h, w), each one view of a face, to the input tensor: the contract's
        face normalization (equalization), then pixels as they are (the model scales them to
        [-1, 1] in its first layer), quantized for an int8 input."""
        x = normalize_faces(crops, self.contract.face_normalization).astype(np.float32)[..., None]
        if self.contract.input_quantization is not None:
            return quantize(x, self.contract.input_quantization, self.contract.input_dtype)
        return x.astype(self.contract.input_dtype)

    def classify(self, crops: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, len(labels)) for N face crops, in one interpreter call."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        views = self.contract.views
        averaged = average_views(self.invoke(all_views(crops, views)), len(views))
        return calibrate(averaged, self.contract.temperature, self.contract.class_bias)

    def classify_with(
        self, crops: np.ndarray | Sequence[np.ndarray], views: Sequence[tuple[View, ...]]
    ) -> np.ndarray:
        """Probabilities (N, len(labels)) for N face crops, each averaged over its own views
        (``views[i]`` for crop i), in one interpreter call. The calibration is applied to each
        face's average, as ``classify`` does: every answer the tracker smooths is calibrated."""
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        batch = [
            apply_view(crops[i : i + 1], view) for i, face_views in enumerate(views) for view in face_views
        ]
        out = self.invoke(np.concatenate(batch))
        ends = np.cumsum([len(face_views) for face_views in views])
        averaged = np.stack(
            [out[end - len(face_views) : end].mean(axis=0) for end, face_views in zip(ends, views)]
        )
        return calibrate(averaged, self.contract.temperature, self.contract.class_bias)

    def invoke(self, crops: np.ndarray) -> np.ndarray:
        """One pass of the model file over the crops (no test-time views)."""
        self._set_batch(len(crops))
        self._interpreter.set_tensor(self._input["index"], self.prepare(crops))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        if self.contract.output_quantization is not None:
            out = dequantize(out, self.contract.output_quantization)
        return out.astype(np.float32)

    def invoke_many(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``invoke`` over any number of crops, a batch at a time: the model's own answer, one
        view each, uncalibrated (what a conversion is checked on)."""
        return np.concatenate(
            [self.invoke(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
        )

    def classify_many(self, crops: np.ndarray, batch_size: int = 128) -> np.ndarray:
        return (
            np.concatenate(
                [self.classify(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)]
            )
            if len(crops)
            else np.zeros((0, len(self.labels)), dtype=np.float32)
        )
