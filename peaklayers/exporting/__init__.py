"""Exporting: a peak layer, or a model ending in one, to ONNX or ``torch.export``.

:func:`export_onnx` imports onnx when it runs; importing this package does not.
:func:`compose_pipeline` joins a pipeline's stages with its :class:`OnnxHead` heads (ONNX
models, no PyTorch source) into one ONNX graph; onnx and onnxruntime load when used.
"""

from ._noise import ExportWarning
from .compose import compose_pipeline
from .export import (
    DYNAMO_OPSETS,
    TORCHSCRIPT_OPSETS,
    default_opset,
    export_onnx,
    export_program,
    output_names_for,
)
from .onnx_head import OnnxHead

__all__ = [
    "DYNAMO_OPSETS",
    "TORCHSCRIPT_OPSETS",
    "ExportWarning",
    "OnnxHead",
    "compose_pipeline",
    "default_opset",
    "export_onnx",
    "export_program",
    "output_names_for",
]
