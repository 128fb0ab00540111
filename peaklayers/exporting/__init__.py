"""Exporting: a peak layer, or a model ending in one, to ONNX or ``torch.export``.

:func:`export_onnx` imports onnx when it runs; importing this package does not.
"""

from ._noise import ExportWarning
from .export import (
    DYNAMO_OPSETS,
    TORCHSCRIPT_OPSETS,
    default_opset,
    export_onnx,
    export_program,
    output_names_for,
)

__all__ = [
    "DYNAMO_OPSETS",
    "TORCHSCRIPT_OPSETS",
    "ExportWarning",
    "default_opset",
    "export_onnx",
    "export_program",
    "output_names_for",
]
