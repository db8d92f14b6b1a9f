"""The arithmetic the model contract prescribes on arrays: test-time views of face crops
and the int8 (de)quantization of the model's input and output. Pure functions of numpy
arrays, apart from ``edge.contract`` so that what needs only the contract's names (the
command line, the dashboard) never loads numpy."""

from __future__ import annotations

import numpy as np

from edge.contract import Quantization, View


def apply_view(crops: np.ndarray, view: View) -> np.ndarray:
    """``crops`` (N, h, w) as seen through ``view``; a pure function of its inputs."""
    out = crops[:, :, ::-1] if view.flip else crops
    pad = max(abs(view.dx), abs(view.dy))
    if pad:
        h, w = crops.shape[1:3]
        padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        out = padded[:, pad - view.dy : pad - view.dy + h, pad - view.dx : pad - view.dx + w]
    return np.ascontiguousarray(out)


def all_views(crops: np.ndarray, views: tuple[View, ...]) -> np.ndarray:
    """The crops through every view, view after view: (len(views) * N, h, w)."""
    return np.concatenate([apply_view(crops, view) for view in views])


def average_views(probs: np.ndarray, n_views: int) -> np.ndarray:
    """Mean over views of probabilities laid out as ``all_views`` lays out the crops."""
    return probs.reshape(n_views, -1, probs.shape[-1]).mean(axis=0)


def quantize(values: np.ndarray, quant: Quantization, dtype: str) -> np.ndarray:
    info = np.iinfo(np.dtype(dtype))
    q = np.round(values / quant.scale + quant.zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, quant: Quantization) -> np.ndarray:
    return (values.astype(np.float32) - quant.zero_point) * np.float32(quant.scale)
