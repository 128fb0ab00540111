"""The metadata written beside and into the models, and the short Markdown report."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import onnxruntime
import torch

import peaklayers

from .folders import CREATED_BY
from .settings import LayerSettings
from .verify import TOLERANCE, Parity


def output_shapes(settings: LayerSettings, channels: int, classes: int | None,
                  maps_dtype: str = "float32") -> list[dict]:
    """Name, shape (axis names where the size varies) and dtype of every output."""
    sizes = {"channels": channels, "k": settings.k, "classes": classes}
    return [{"name": o.name, "shape": o.shape(sizes),
             "dtype": maps_dtype if o.dtype == "maps" else o.dtype}
            for o in settings.outputs()]


def metadata(*, source: str, settings: LayerSettings, input_name: str, input_shape: list,
             input_dtype: str, channels: int, classes: int | None, opset: int,
             maps_dtype: str = "float32", extra: dict | None = None) -> dict:
    data = {
        "created_by": CREATED_BY,
        "source": source,
        "layer": settings.as_dict(),
        "stride": settings.stride,
        "opset": opset,
        "inputs": [{"name": input_name, "shape": input_shape, "dtype": input_dtype}],
        "outputs": output_shapes(settings, channels, classes, maps_dtype),
        "channels": channels,
        "classes": classes,
        "versions": {
            "peaklayers": peaklayers.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },
    }
    data.update(extra or {})
    return data


def _ms(value: float) -> str:
    return "—" if np.isnan(value) else f"{value:.2f}"


def markdown(title: str, meta: dict, parities: list[Parity], files: list[str],
             accuracy: str | None = None, notes: list[str] | None = None) -> str:
    layer = ", ".join(f"{k}={v}" for k, v in meta["layer"].items())
    lines = [
        f"# {title}",
        "",
        f"- Source: {meta['source']}",
        f"- Peak layer: {layer}",
        f"- Input: `{meta['inputs'][0]['name']}` {meta['inputs'][0]['shape']} "
        f"{meta['inputs'][0]['dtype']}; ONNX opset {meta['opset']}",
        "- Outputs: " + ", ".join(f"`{o['name']}` {o['shape']} {o['dtype']}"
                                 for o in meta["outputs"]),
        f"- Files: {', '.join(files)}",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        "",
        "## Parity with eager PyTorch and latency",
        "",
        f"Each backend ran on inputs of shapes {parities[-1].inputs}; float outputs must agree "
        f"within {TOLERANCE:g} (NaN in the same places), integer and boolean outputs exactly. "
        f"Latency: median of 10 runs on the first input, this machine.",
        "",
        "| backend | provider | max abs diff | mismatches | latency (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for p in parities:
        diff = "reference" if p.backend == "eager" else f"{p.max_abs_diff:.2e}"
        lines.append(f"| {p.backend} | {p.provider} | {diff} | {len(p.mismatches)} | "
                     f"{_ms(p.latency_ms)} |")
    if accuracy:
        lines += ["", "## Accuracy against the known keypoints", "", accuracy]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
