"""A user's ONNX head as a module of a pipeline: run eagerly in ONNX Runtime (CPU).

A pipeline built around :class:`OnnxHead` modules runs its own stages in PyTorch and the
heads in ONNX Runtime: that is the reference :func:`~.compose.compose_pipeline`'s single
graph is checked against. onnx and onnxruntime are imported when a head is made.
"""

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import onnx

OutputSelector = Optional[Union[int, str, Sequence[Union[int, str]]]]

_FLOAT = 1  # onnx.TensorProto.FLOAT
_UINT8 = 2  # onnx.TensorProto.UINT8


def default_opset_of(model: "onnx.ModelProto") -> int:
    """The default-domain (``""`` or ``"ai.onnx"``) opset a model imports; 0 if none."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _dims(value) -> list:
    """A value's shape: ints where fixed, None where symbolic or unknown."""
    return [d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim]


class OnnxHead(nn.Module):
    """A head given as an ONNX model, with the outputs a pipeline reads.

    Args:
        model (str, PathLike or onnx.ModelProto): the head; one input, float32 images
            ``(S, C, H, W)`` in ``[0, 1]`` with a dynamic batch axis.
        outputs (None, int, str or a sequence of them): which outputs ``forward``
            returns, by index or name: None is the first output (a tensor), an int or a
            str one output (a tensor), a sequence several (a tuple, in that order).
        name (str, optional): how errors name the head (default: the file, or "the ONNX
            head").

    ``forward(x (Tensor[S, C, H, W], float32))`` returns the selected outputs as tensors.

    Attributes:
        model (onnx.ModelProto), input_name (str), input_dims (list: int or None per
        axis), output_names (tuple of str, the selected outputs), name (str).

    Raises:
        ValueError: the model does not load or check, has no input or several, its input
            is not 4-D float32 with a dynamic batch (uint8 heads are refused: the pipeline
            does the ``/ 255``), or an output selector names no output. Every message
            names the head.
    """

    def __init__(self, model: Union[str, "os.PathLike[str]", "onnx.ModelProto"],
                 outputs: OutputSelector = None, name: Optional[str] = None) -> None:
        super().__init__()
        import onnx

        if isinstance(model, onnx.ModelProto):
            self.name = name or "the ONNX head"
        else:
            self.name = name or str(model)
            try:
                model = onnx.load(os.fspath(model))
            except Exception as error:  # any failure to parse the user's file
                raise ValueError(f"{self.name} is not a readable ONNX model: "
                                 f"{str(error).splitlines()[0]}") from None
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as error:
            raise ValueError(f"{self.name} does not check as ONNX: "
                             f"{str(error).splitlines()[0]}") from None
        self.model = model
        if not default_opset_of(model):
            raise ValueError(f"{self.name} imports no default-domain ONNX opset")
        self.input_name, self.input_dims = self._input()
        self.output_names = self.select(outputs)
        self._session = None

    def _input(self) -> tuple[str, list]:
        graph = self.model.graph
        initializers = {i.name for i in graph.initializer}
        inputs = [v for v in graph.input if v.name not in initializers]
        if len(inputs) != 1:
            raise ValueError(f"{self.name} must have one input (an image batch), it has "
                             f"{len(inputs)}: {[v.name for v in inputs]}")
        value = inputs[0]
        elem = value.type.tensor_type.elem_type
        if elem == _UINT8:
            raise ValueError(f"{self.name} takes uint8 images; a pipeline head takes float32 "
                             "images in [0, 1] (the pipeline converts uint8 frames): "
                             "re-export the head without its own /255")
        if elem != _FLOAT:
            raise ValueError(f"{self.name}'s input {value.name!r} must be float32 images in "
                             f"[0, 1], it has ONNX element type {elem}")
        dims = _dims(value)
        if len(dims) != 4:
            raise ValueError(f"{self.name}'s input {value.name!r} is {len(dims)}-D; a head "
                             "takes images (batch, channels, height, width)")
        if dims[0] is not None:
            raise ValueError(f"{self.name}'s input {value.name!r} has a fixed batch size "
                             f"{dims[0]}; a pipeline head needs a dynamic batch axis")
        return value.name, dims

    def select(self, outputs: OutputSelector) -> tuple[str, ...]:
        """The names of the outputs ``outputs`` chooses (see the class); ValueError
        naming the head and its outputs when one does not exist."""
        names = [v.name for v in self.model.graph.output]
        if not names:
            raise ValueError(f"{self.name} has no outputs")
        if outputs is None:
            outputs = 0
        chosen = [outputs] if isinstance(outputs, (int, str)) else list(outputs)
        picked = []
        for selector in chosen:
            if isinstance(selector, bool) or not isinstance(selector, (int, str)):
                raise ValueError(f"{self.name}: an output is chosen by index or name, got "
                                 f"{selector!r}")
            if isinstance(selector, int):
                if not 0 <= selector < len(names):
                    raise ValueError(f"{self.name} has {len(names)} output(s) {names}; no "
                                     f"output index {selector}")
                picked.append(names[selector])
            elif selector not in names:
                raise ValueError(f"{self.name} has no output {selector!r}; its outputs are "
                                 f"{names}")
            else:
                picked.append(selector)
        return tuple(picked)

    def opset(self) -> int:
        """The model's default-domain opset."""
        return default_opset_of(self.model)

    def _run(self, x: np.ndarray) -> list:
        if self._session is None:
            from ..serving.runtime import open_session

            self._session = open_session(self.model.SerializeToString(), "cpu").session
        for axis, (want, got) in enumerate(zip(self.input_dims, x.shape, strict=True)):
            if want is not None and want != got:
                raise ValueError(f"{self.name} takes inputs of shape {self.input_dims} (axis "
                                 f"{axis} fixed at {want}); the pipeline gives it {list(x.shape)}")
        return self._session.run(list(self.output_names), {self.input_name: x})

    def forward(self, x: torch.Tensor):
        outs = [torch.from_numpy(np.asarray(o)) for o in self._run(x.detach().cpu().numpy())]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, outputs={self.output_names}"
