"""Append the peak layers to a user's ONNX model with ``onnx.compose`` — no PyTorch source needed.

The peak part (peak layer, and class-map lookup with ``--class-maps``) is exported on its
own from the library's modules, its internal names prefixed with ``peaklayers/``, and
merged onto the chosen confidence-map output (and class-map output). Both graphs must use
the same default-domain opset: the older one is converted up with
``onnx.version_converter``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import compose, version_converter

from peaklayers import export_onnx
from peaklayers.exporting import TORCHSCRIPT_OPSETS

from .common import ToolError, first_line
from .formats import _quiet
from .settings import LayerSettings

PREFIX = "peaklayers/"


def opset_of(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ToolError("the ONNX model imports no default-domain opset")


def _convert(model: onnx.ModelProto, opset: int, what: str) -> onnx.ModelProto:
    try:
        return version_converter.convert_version(model, opset)
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as error:
        raise ToolError(f"cannot convert the {what} to ONNX opset {opset} "
                        f"({first_line(error)}); re-export it at opset "
                        f"{TORCHSCRIPT_OPSETS[0]} or newer") from None


def output_rank(model: onnx.ModelProto, name: str) -> int | None:
    for value in model.graph.output:
        if value.name == name and value.type.tensor_type.HasField("shape"):
            return len(value.type.tensor_type.shape.dim)
    return None


def peak_graph(settings: LayerSettings, cms: np.ndarray, class_maps: np.ndarray | None,
               opset: int, metadata: dict[str, str]) -> onnx.ModelProto:
    """The peak part alone as ONNX, exported at ``opset`` from the library's modules."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "peaks.onnx"
        module = settings.build().eval()
        try:
            if class_maps is None:
                example, inputs = torch.from_numpy(cms), "confmaps"
            else:
                example = (torch.from_numpy(cms), torch.from_numpy(class_maps))
                inputs = ("confmaps", "class_maps")
            _quiet(export_onnx, module, example, path, opset=opset, input_name=inputs,
                   output_names=settings.output_names(), metadata=metadata)
        except (ValueError, TypeError) as error:
            raise ToolError(f"cannot export the peak layer: {error}") from None
        return onnx.load(str(path))


def append_peaks(head: onnx.ModelProto, settings: LayerSettings, cms_output: str,
                 class_maps_output: str | None, cms: np.ndarray, class_maps: np.ndarray | None,
                 metadata: dict[str, str]) -> onnx.ModelProto:
    """``head`` with the peak part attached to ``cms_output`` (and ``class_maps_output``).

    ``cms``/``class_maps`` are the head's outputs on an example input (for the export).
    The result's outputs are the peak part's, named as in :meth:`LayerSettings.output_names`.
    """
    head_opset = opset_of(head)
    lowest, highest = TORCHSCRIPT_OPSETS[0], TORCHSCRIPT_OPSETS[-1]
    target = min(max(head_opset, lowest), highest)
    peaks = peak_graph(settings, cms, class_maps, target, metadata)
    if head_opset < target:
        head = _convert(head, target, "model")
    elif head_opset > target:
        peaks = _convert(peaks, head_opset, "peak graph")

    taken = {n for node in head.graph.node for n in node.output} | {
        v.name for v in head.graph.input}
    clashes = taken & set(settings.output_names())
    if clashes:
        raise ToolError(f"the ONNX model already has tensors named {sorted(clashes)}, the names "
                        "of the peak outputs; rename them in the model")
    peaks = compose.add_prefix(peaks, PREFIX)
    io_map = [(cms_output, PREFIX + "confmaps")]
    if class_maps_output is not None:
        io_map.append((class_maps_output, PREFIX + "class_maps"))
    ir_version = max(head.ir_version, peaks.ir_version)
    head.ir_version = peaks.ir_version = ir_version
    try:
        merged = compose.merge_models(
            head, peaks, io_map=io_map,
            outputs=[PREFIX + name for name in settings.output_names()])
    except (ValueError, onnx.checker.ValidationError) as error:
        raise ToolError(f"cannot append the peak graph: {first_line(error)}") from None
    for name in settings.output_names():  # drop the prefix from the final outputs
        for node in merged.graph.node:
            node.output[:] = [name if o == PREFIX + name else o for o in node.output]
            node.input[:] = [name if i == PREFIX + name else i for i in node.input]
        for value in merged.graph.output:
            if value.name == PREFIX + name:
                value.name = name
    onnx.helper.set_model_props(merged, {**{p.key: p.value for p in head.metadata_props},
                                         **metadata})
    try:
        onnx.checker.check_model(merged, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ToolError(f"the appended ONNX graph does not check: {first_line(error)}") from None
    return merged
