"""ONNX export of graphs that ``peaklayers.export_onnx`` does not accept yet (a library gap).

``peaklayers.export_onnx`` exports a module whose outputs are exactly those of its last
peak layer, with one input. Two graphs of this tool are outside that:

- a head + peak layer + :class:`~peaklayers.class_maps.ClassMapLookup` (``--class-maps``):
  the outputs are the peak layer's plus ``class_probs``;
- the peak part appended to a user's ONNX model with ``--class-maps``: two inputs
  (confidence maps and class maps).

Until the library takes extra outputs and inputs, this one function calls
``torch.onnx.export`` itself with the same conventions (TorchScript-based exporter,
dynamic batch/height/width on every input, the first axis of each output named as the
library names it, ``onnx.checker`` on the result, metadata in ``metadata_props``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch


def export_onnx_beyond_library(model: torch.nn.Module, examples: tuple[torch.Tensor, ...],
                               path: Path, *, input_names: list[str], output_names: list[str],
                               first_axis: str, opset: int, metadata: dict[str, str]) -> Path:
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in input_names}
    axes.update({name: {0: first_axis} for name in output_names})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), examples, str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=axes, opset_version=opset,
                          dynamo=False)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return Path(path)


def program_to_onnx(program: torch.export.ExportedProgram, input_name: str, n_outputs: int,
                    opset: int) -> onnx.ModelProto:
    """A loaded ``torch.export`` program (the user's head) as ONNX, with its own dynamic dims.

    ``peaklayers.export_onnx`` takes an ``nn.Module`` and switches it to eval mode, which
    the module of a loaded program refuses ("Calling train() is not supported yet").
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, dynamo=True, input_names=[input_name], opset_version=opset,
            output_names=[f"head_output_{i}" for i in range(n_outputs)], verbose=False)
    return onnx_program.model_proto
