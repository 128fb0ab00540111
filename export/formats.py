"""The export formats, as data: name, file suffix, how to write one and how to load it back.

One function per format writes the file; the matching loader returns a callable used to
verify it (``frames (ndarray) -> list[ndarray]``, outputs in order). Every written file
carries the metadata: TorchScript and ``.pt2`` as an extra file ``metadata.json`` in the
archive, ONNX in ``metadata_props`` under the key ``peaklayers.metadata`` (JSON).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from peaklayers.exporting import ExportWarning, default_opset, export_onnx, export_program

from .common import ToolError, first_line, log
from .sessions import open_peak_session

METADATA_KEY = "peaklayers.metadata"


def effective_opset(opset: int | None, dynamo: bool) -> int:
    """The opset an export will use: ``opset``, else the library's default for the exporter."""
    return default_opset(dynamo) if opset is None else opset


@dataclass
class Job:
    """What every format writer needs: the composed module, an example and the names."""

    graph: nn.Module
    example: torch.Tensor
    input_name: str
    output_names: list[str]
    metadata: dict
    opset: int = default_opset(dynamo=False)
    dynamo: bool = False

    def metadata_json(self) -> str:
        return self.metadata_json_of(self.metadata)

    @staticmethod
    def metadata_json_of(metadata: dict) -> str:
        return json.dumps(metadata, sort_keys=True)


def _quiet(fn: Callable, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def save_torchscript(job: Job, path: Path) -> Path:
    try:
        scripted = _quiet(torch.jit.script, job.graph)
    except (RuntimeError, torch.jit.frontend.FrontendError) as error:
        raise ToolError(f"TorchScript: cannot script the model: {first_line(error)}") from None
    _quiet(torch.jit.save, scripted, str(path),
           _extra_files={"metadata.json": job.metadata_json()})
    return path


def save_program(job: Job, path: Path) -> Path:
    try:
        program = _quiet(export_program, job.graph, job.example)
    except (RuntimeError, ValueError) as error:  # torch.export's errors are RuntimeErrors
        raise ToolError(f"torch.export failed on the model with dynamic batch/height/width: "
                        f"{first_line(error)}") from None
    torch.export.save(program, str(path), extra_files={"metadata.json": job.metadata_json()})
    return path


def save_onnx(job: Job, path: Path) -> Path:
    """The library's export: extra outputs (``class_probs``), a loaded TorchScript head
    (scripted with the graph) and a loaded ``.pt2`` head are all its business. It hides
    the exporters' own noise; what it says about the user's model is shown."""
    metadata = {METADATA_KEY: job.metadata_json()}
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", ExportWarning)
        try:
            export_onnx(job.graph, job.example, path, opset=job.opset, dynamo=job.dynamo,
                        input_name=job.input_name, output_names=job.output_names,
                        metadata=metadata)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as error:
            raise ToolError(f"ONNX export failed: {first_line(error)}") from None
    for warning in said:
        if issubclass(warning.category, ExportWarning):
            log(f"  warning: {Path(warning.filename).name}:{warning.lineno}: {warning.message}")
    return path


def torch_backend(module: Callable) -> Callable[[np.ndarray], list[np.ndarray]]:
    def run(frames: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(frames))
        return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]

    return run


def load_torchscript(path: Path, provider: str = "cpu"):
    return torch_backend(_quiet(torch.jit.load, str(path))), "CPU (torch)"


def load_program(path: Path, provider: str = "cpu"):
    return torch_backend(torch.export.load(str(path)).module()), "CPU (torch)"


def load_onnx(path: Path, provider: str = "cpu"):
    session = open_peak_session(path, provider)

    def run(frames: np.ndarray) -> list[np.ndarray]:
        return list(session.run(frames).values())

    return run, session.provider


@dataclass(frozen=True)
class Format:
    key: str
    label: str
    suffix: str
    save: Callable[[Job, Path], Path]
    load: Callable


FORMATS = {
    f.key: f
    for f in (
        Format("torchscript", "TorchScript", ".torchscript.pt", save_torchscript, load_torchscript),
        Format("pt2", "torch.export", ".pt2", save_program, load_program),
        Format("onnx", "ONNX", ".onnx", save_onnx, load_onnx),
    )
}
