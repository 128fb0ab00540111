"""Export a peak layer, or a model ending in one, to ONNX or ``torch.export`` (SPEC §4).

Both helpers make batch, height and width dynamic, so the exported graph gives the
same output as eager PyTorch at sizes other than the example's. Channels stay fixed
(they are the model's body parts).

:func:`export_onnx` names the inputs and outputs, picks the opset and checks the file::

    import torch
    from peaklayers import TopKPeaks, export_onnx

    export_onnx(TopKPeaks(8), torch.rand(2, 17, 64, 48), "topk.onnx")
    # inputs: confmaps (batch, 17, height, width); outputs: points, vals, valid

A model may take several inputs (``example`` a tuple, one tensor each) and return extra
outputs after its peak layer's, such as the class probabilities of a
:class:`~peaklayers.ClassMapLookup`; the head may be a loaded ``torch.export`` program or
TorchScript module (see :func:`export_onnx`).

The graph contents are audited by ``tests/test_graph_audit.py``; the README lists the
operators of every layer's graph.
"""

import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, TypeVar, Union

import torch
from torch import nn

from ..ops._layer import PeakLayer
from ..ops.pipelines import Pipeline
from ._model import _eval_mode, _run_recorded, _scripted_for_tracer, _scripted_part
from ._noise import exporter_noise_hidden

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DYNAMO_OPSETS",
    "TORCHSCRIPT_OPSETS",
    "default_opset",
    "export_onnx",
    "export_program",
    "output_names_for",
]

# 16 is the oldest opset exported and tested (both ends are). The TorchScript-based exporter
# stops at opset 20; the dynamo exporter translates at opset 18 and up (below it,
# it converts versions after the fact) and goes up to the newest opset it knows.
_MIN_OPSET = 16
_DEFAULT_TORCHSCRIPT_OPSET = 17
_DYNAMO_MIN_OPSET = 18


def _max_opsets() -> tuple[int, int]:
    try:
        from torch.onnx import _constants

        return (
            int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET),
            int(_constants.ONNX_MAX_OPSET),
        )
    except (ImportError, AttributeError):  # pragma: no cover - older/newer torch layouts
        return 20, 20


TORCHSCRIPT_OPSETS = range(_MIN_OPSET, _max_opsets()[0] + 1)
"""Opsets :func:`export_onnx` accepts with ``dynamo=False`` (default 17)."""
DYNAMO_OPSETS = range(_DYNAMO_MIN_OPSET, _max_opsets()[1] + 1)
"""Opsets :func:`export_onnx` accepts with ``dynamo=True`` (default: the newest)."""

# The default name of an extra output made by a ClassMapLookup, and of the second input.
_CLASS_PROBS = "class_probs"
_EXTRA_INPUT_NAMES = ("class_maps",)
_T = TypeVar("_T")


def output_names_for(layer: nn.Module) -> tuple[str, ...]:
    """Names of a peak layer's outputs, in order (from its ``outputs`` description).

    ``GlobalPeaks``: ``points, vals``; ``LocalPeaks``: ``points, vals, sample_inds,
    channel_inds``; ``TopKPeaks``: ``points, vals, valid``.
    """
    if not isinstance(layer, PeakLayer):
        raise TypeError(
            "layer must be a GlobalPeaks, LocalPeaks or TopKPeaks, got " + type(layer).__name__
        )
    return tuple(output.name for output in layer.outputs)


def _check_example(example: object, what: str = "example") -> torch.Tensor:
    if not isinstance(example, torch.Tensor):
        raise TypeError(
            what + " must be a torch.Tensor or a tuple of tensors (one per input), got "
            + type(example).__name__
        )
    if not example.is_floating_point() and example.dtype != torch.uint8:
        raise TypeError(
            what + " must have a floating-point dtype (the model's input maps or images) or "
            "be uint8 (frames into a pipeline), got " + str(example.dtype)
        )
    if example.dim() != 4:
        raise ValueError(
            what + " must be a 4-D tensor (batch, channels, height, width), got "
            + str(example.dim()) + "-D"
        )
    if 0 in example.shape:
        raise ValueError(what + " must not be empty, got shape " + str(tuple(example.shape)))
    return example


def _check_examples(example: object) -> tuple[torch.Tensor, ...]:
    """One tensor per model input; they share the batch axis."""
    if not isinstance(example, (tuple, list)):
        return (_check_example(example),)
    if not example:
        raise ValueError("example must hold at least one tensor, got an empty " +
                         type(example).__name__)
    examples = tuple(_check_example(t, f"example[{i}]") for i, t in enumerate(example))
    batches = [int(t.shape[0]) for t in examples]
    if len(set(batches)) > 1:
        raise ValueError(
            "example tensors must have the same batch size (all inputs share the batch "
            "axis), got " + str(batches)
        )
    return examples


def _check_model(model: object) -> nn.Module:
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a torch.nn.Module or a torch.export.ExportedProgram, got "
            + type(model).__name__
        )
    return model


# -- what the model returns ---------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    """The final peak layer (None for a plain head; the model for a
    :class:`~peaklayers.ops.pipelines.Pipeline`), and per model output: the output, its
    default name (None: no default) and the size its first axis follows (None: unknown
    producer)."""

    layer: Optional[nn.Module]
    outputs: tuple
    defaults: tuple[Optional[str], ...]
    first_axes: tuple[Optional[str], ...]


def _describe(outputs: tuple) -> str:
    parts = []
    for out in outputs:
        if isinstance(out, torch.Tensor):
            parts.append(f"Tensor{list(out.shape)}")
        else:
            parts.append(type(out).__name__)
    return "(" + ", ".join(parts) + ")"


def _signature(model: nn.Module, examples: tuple[torch.Tensor, ...]) -> _Signature:
    outputs, peak_calls, lookups = _run_recorded(model, examples)
    if isinstance(model, Pipeline):  # frames in: every output follows the batch
        return _Signature(model, outputs, model.output_names, ("batch",) * len(outputs))
    if peak_calls:
        layer, layer_output = peak_calls[-1]
        own = tuple(layer_output) if isinstance(layer_output, tuple) else ()
        if own and len(outputs) >= len(own) and all(
            a is b for a, b in zip(own, outputs, strict=False)
        ):
            defaults: list[Optional[str]] = list(output_names_for(layer))
            axes: list[Optional[str]] = [_first_axis(layer)] * len(own)
            for index, out in enumerate(outputs[len(own):], start=len(own)):
                if not isinstance(out, torch.Tensor):
                    raise ValueError(
                        f"model output {index} must be a tensor; the outputs are "
                        + _describe(outputs)
                    )
                axis = next((a for found, a in lookups if found is out), None)
                defaults.append(_CLASS_PROBS if axis is not None else None)
                axes.append(axis)
            return _Signature(layer, outputs, tuple(defaults), tuple(axes))
    if (
        len(outputs) == 1
        and isinstance(outputs[0], torch.Tensor)
        and outputs[0].dim() == 4
        and outputs[0].is_floating_point()
    ):
        return _Signature(None, outputs, ("confmaps",), ("batch",))
    raise ValueError(
        "model must end with a peak layer (GlobalPeaks, LocalPeaks, TopKPeaks), returning "
        "its outputs first (then any extra outputs), or return one 4-D floating-point map "
        "(batch, channels, height, width); its output is " + _describe(outputs)
    )


def default_opset(dynamo: bool) -> int:
    """The opset :func:`export_onnx` uses when none is given: 17 for the TorchScript-based
    exporter, the newest the installed one supports for the dynamo exporter."""
    return DYNAMO_OPSETS[-1] if dynamo else _DEFAULT_TORCHSCRIPT_OPSET


def _check_opset(opset: object, dynamo: bool) -> int:
    allowed = DYNAMO_OPSETS if dynamo else TORCHSCRIPT_OPSETS
    if opset is None:
        return default_opset(dynamo)
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError("opset must be an int or None, got " + type(opset).__name__)
    if opset not in allowed:
        exporter = "dynamo=True" if dynamo else "dynamo=False"
        raise ValueError(
            f"opset {opset} is not supported with {exporter}: use {allowed[0]} to "
            f"{allowed[-1]} (the installed exporter stops at {allowed[-1]})"
        )
    return opset


def _input_names(input_name: object, count: int) -> tuple[str, ...]:
    if isinstance(input_name, str) and input_name:
        names = (input_name, *_EXTRA_INPUT_NAMES)[:count]
        if len(names) < count:
            raise ValueError(
                f"input_name must be a sequence of {count} names for a model with {count} "
                f"inputs (only a second input has a default name, {_EXTRA_INPUT_NAMES[0]!r})"
            )
        return names
    if (
        isinstance(input_name, (tuple, list))
        and input_name
        and all(isinstance(n, str) and n for n in input_name)
    ):
        if len(input_name) != count:
            raise ValueError(
                f"input_name must name {count} input(s), one per example tensor, got "
                f"{len(input_name)}: {tuple(input_name)}"
            )
        return tuple(input_name)
    raise TypeError(
        "input_name must be a non-empty str or a sequence of non-empty str, got "
        + repr(input_name)
    )


def _check_names(
    names: object, signature: _Signature, input_name: object, n_inputs: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    inputs = _input_names(input_name, n_inputs)
    defaults = signature.defaults
    shown = tuple(d or "?" for d in defaults)
    if names is None:
        unnamed = [i for i, d in enumerate(defaults) if d is None]
        if unnamed:
            index = unnamed[0]
            raise ValueError(
                f"model output {index} ({_describe(signature.outputs[index:index + 1])[1:-1]}) "
                "comes from neither the peak layer nor a ClassMapLookup, so it has no "
                f"default name: pass output_names with all {len(defaults)} names {shown}"
            )
        names = defaults
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError("output_names must be a sequence of non-empty str, got " + repr(names))
    names = tuple(names)
    if len(names) != len(defaults):
        raise ValueError(
            f"output_names must name {len(defaults)} outputs {shown}, got {len(names)}"
        )
    everything = (*inputs, *names)
    if len(set(everything)) != len(everything):
        raise ValueError(
            f"input and output names must all differ, got inputs {inputs} and outputs {names}"
        )
    return inputs, names


def _check_metadata(metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("metadata must be a dict of str to str, got " + repr(metadata))
    return dict(metadata)


# Bounds of one input axis: (min, max or None), or None where the axis has a fixed size.
_Bound = Optional[tuple[int, Optional[int]]]
_DYNAMIC_AXES = (0, 2, 3)


def _program_bounds(model: nn.Module, count: int) -> list[dict[int, _Bound]]:
    """The sizes a ``torch.export`` program at the model's input accepts, per input.

    A ``.pt2`` head may have been exported with bounded Dims (say height in [16, 256])
    or fixed sizes; exporting the model around it with unbounded Dims would contradict
    the program's own checks ("Constraints violated"). The first program module met in
    ``model.modules()`` (the model itself, or the first stage of a Sequential) is taken
    to read the model's inputs, if it has as many; its bounds then become the Dims'.
    Axes the program does not constrain are not listed. A pipeline's frames are at least
    its ``min_frame_size()`` (smaller frames would give its resized frames and maps the
    sizes 0 and 1, which torch.export specialises).
    """
    if isinstance(model, Pipeline):
        size: _Bound = (model.min_frame_size(), None)
        return [{2: size, 3: size} for _ in range(count)]
    for module in model.modules():
        ranges = getattr(module, "range_constraints", None)
        if not isinstance(module, torch.fx.GraphModule) or not isinstance(ranges, dict):
            continue
        shapes = [
            node.meta["val"].shape
            for node in module.graph.nodes
            if node.op == "placeholder" and isinstance(node.meta.get("val"), torch.Tensor)
        ]
        if len(shapes) != count or any(len(shape) != 4 for shape in shapes):
            return [{} for _ in range(count)]
        bounds = []
        for shape in shapes:
            axes: dict[int, _Bound] = {}
            for axis in _DYNAMIC_AXES:
                size = shape[axis]
                if not isinstance(size, torch.SymInt):
                    axes[axis] = None  # fixed by the program
                    continue
                value_range = ranges.get(size.node.expr)
                if value_range is None:
                    continue  # a derived size (2 * h, ...): left to torch.export
                try:
                    upper: Optional[int] = int(value_range.upper)
                except Exception:  # int_oo: unbounded
                    upper = None
                axes[axis] = (max(int(value_range.lower), 1), upper)
            bounds.append(axes)
        return bounds
    return [{} for _ in range(count)]


def _widened(example: torch.Tensor, bounds: Optional[dict[int, _Bound]] = None) -> torch.Tensor:
    """``example`` with batch, height and width of 1 repeated to 2.

    Exporters specialise a size of 1 into a constant (torch.export refuses to keep it
    dynamic); the graph of a peak layer does not depend on the values, so repeating
    the one sample, row or column loses nothing. Axes that ``bounds`` fixes, or caps
    at 1, are left as they are.
    """
    sizes = list(example.shape)
    for axis in _DYNAMIC_AXES:
        bound = (bounds or {}).get(axis, (1, None))
        if sizes[axis] == 1 and bound is not None and (bound[1] is None or bound[1] >= 2):
            sizes[axis] = 2
    if sizes == list(example.shape):
        return example
    return example.expand(*sizes).contiguous()


def _size_names(index: int) -> tuple[str, str]:
    """Names of the height and width of input ``index``: ``height``, ``width`` for the
    first, ``height_1``, ``width_1`` for the second, ..."""
    suffix = "" if index == 0 else f"_{index}"
    return "height" + suffix, "width" + suffix


# The largest size given to an otherwise unbounded Dim when other Dims are bounded: with
# a mix, torch.export's ranges for data-dependent sizes (the local peaks' count) multiply
# an infinite bound by a finite one into a constant beyond int64, which the ONNX exporter
# cannot write. No axis of a real input comes near it.
_LARGEST_AXIS = 2**31 - 1


def _dim(name: str, bounds: list[_Bound], capped: bool = False) -> Optional[object]:
    """A Dim within every one of ``bounds`` (None: a fixed size); at most
    :data:`_LARGEST_AXIS` if ``capped``."""
    low, high = 1, None
    for bound in bounds:
        if bound is None:
            return None
        low = max(low, bound[0])
        if bound[1] is not None:
            high = bound[1] if high is None else min(high, bound[1])
    if high is None and capped:
        high = _LARGEST_AXIS
    if high is None:
        return torch.export.Dim(name, min=low)
    return torch.export.Dim(name, min=low, max=high)


def _dynamic_shapes(
    count: int = 1, shared: bool = False, bounds: Optional[list[dict[int, _Bound]]] = None
) -> tuple[dict[int, object], ...]:
    """``torch.export`` Dims: one batch for all inputs; height and width per input, or
    (``shared``) the first input's for every input; within ``bounds`` (see
    :func:`_program_bounds`), and absent for the axes they fix."""
    bounds = bounds or [{} for _ in range(count)]
    unbounded: _Bound = (1, None)
    capped = any(b is not None and b[1] is not None for axes in bounds for b in axes.values())
    batch = _dim("batch", [b.get(0, unbounded) for b in bounds], capped)
    shapes = []
    for index in range(count):
        if shared and shapes:
            shapes.append(dict(shapes[0]))
            continue
        height, width = _size_names(index)
        if shared:
            dims = {
                0: batch,
                2: _dim(height, [b.get(2, unbounded) for b in bounds], capped),
                3: _dim(width, [b.get(3, unbounded) for b in bounds], capped),
            }
        else:
            dims = {
                0: batch,
                2: _dim(height, [bounds[index].get(2, unbounded)], capped),
                3: _dim(width, [bounds[index].get(3, unbounded)], capped),
            }
        shapes.append({axis: dim for axis, dim in dims.items() if dim is not None})
    return tuple(shapes)


def _says(error: BaseException, text: str) -> bool:
    """Whether ``error``, or an error it was raised from or during, mentions ``text``."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if text in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _with_dims(
    export: Callable[[tuple], _T], count: int, bounds: Optional[list[dict[int, _Bound]]] = None
) -> _T:
    """``export(dynamic_shapes)`` with separate height/width per input; if torch.export
    finds that the model needs the inputs' sizes equal, again with shared ones."""
    try:
        try:
            return export(_dynamic_shapes(count, bounds=bounds))
        except RuntimeError as error:  # torch.export's constraint errors
            if count == 1 or not _says(error, "must always be equal"):
                raise
        return export(_dynamic_shapes(count, shared=True, bounds=bounds))
    except RuntimeError as error:
        if not _says(error, "Constraints violated"):
            raise
        raise ValueError(
            "the model restricts its input sizes in a way the dynamic batch, height and "
            "width Dims cannot follow (torch.export: " + str(error).splitlines()[0] + "). "
            "Bounds and fixed sizes of a torch.export program at the model's input are "
            "kept; constraints inside the model are not: export it with Dims of min=1 "
            "and no max (torch.export.Dim('height', min=1)), or give a model whose "
            "first stage is the program"
        ) from error



def export_program(
    model: Union[nn.Module, "torch.export.ExportedProgram"],
    example: Union[torch.Tensor, Sequence[torch.Tensor]],
) -> "torch.export.ExportedProgram":
    """``torch.export.export`` of ``model`` with dynamic batch, height and width.

    Args:
        model (nn.Module or ExportedProgram): a peak layer, a module ending in one, or
            any module taking 4-D tensors; an ``ExportedProgram`` is re-exported from its
            ``module()``. A module holding TorchScript modules cannot be exported.
        example (Tensor[S, C, H, W] or tuple of them): floating point, one tensor per
            input, any size (sizes of 1 are repeated to 2 so that they stay dynamic).
            All inputs share the batch Dim (``batch``); height and width have one Dim per
            input (``height``, ``width``, then ``height_1``, ``width_1``, ...), or one
            for all inputs when the model needs their sizes equal. A ``torch.export``
            program at the model's input (the model, or its first stage, e.g. a ``.pt2``
            head) keeps its own bounds and fixed sizes: the Dims follow them.

    Returns:
        torch.export.ExportedProgram: ``program.module()(*x)`` equals ``model(*x)`` for
        any batch and map sizes.
    """
    model = _check_model(model)
    examples = _check_examples(example)
    bounds = _program_bounds(model, len(examples))
    examples = tuple(_widened(t, b) for t, b in zip(examples, bounds, strict=True))
    name = _scripted_part(model)
    if name is not None or isinstance(model, torch.jit.ScriptModule):
        raise ValueError(
            f"model holds a TorchScript module ({name or 'model'!r}), which torch.export "
            "cannot trace"
        )
    with exporter_noise_hidden():
        return _with_dims(
            lambda dims: torch.export.export(model, examples, dynamic_shapes=dims),
            len(examples),
            bounds,
        )


def _first_axis(layer: PeakLayer) -> str:
    """What the first axis of the layer's outputs counts: ``batch`` or ``peaks``."""
    return str(layer.outputs[0].axes[0])


def _declare_output_shapes(
    proto: "onnx.ModelProto", signature: _Signature, names: tuple[str, ...]
) -> None:
    """Write each output's shape: its first axis (and a head's map size) symbolic, the
    rest (channels, K, 2, classes) fixed. The TorchScript-based exporter leaves channels
    and K symbolic because it reads them from the input's shape at run time. Outputs of
    an unknown producer keep the shapes the exporter gave them.
    """
    by_name = {value.name: value for value in proto.graph.output}
    for name, out, first in zip(names, signature.outputs, signature.first_axes, strict=True):
        if first is None:
            continue
        dims: list[object] = list(out.shape)
        dims[0] = first
        if signature.layer is None:
            dims[2], dims[3] = "map_height", "map_width"
        shape = by_name[name].type.tensor_type.shape
        shape.ClearField("dim")
        for size in dims:
            dim = shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = int(size)


def _dynamic_axes(
    signature: _Signature, inputs: tuple[str, ...], names: tuple[str, ...]
) -> dict[str, dict[int, str]]:
    """``dynamic_axes`` of the TorchScript-based exporter."""
    axes: dict[str, dict[int, str]] = {}
    for index, name in enumerate(inputs):
        height, width = _size_names(index)
        axes[name] = {0: "batch", 2: height, 3: width}
    for name, out, first in zip(names, signature.outputs, signature.first_axes, strict=True):
        if first is None:  # unknown producer: every axis may vary
            axes[name] = {axis: f"{name}_{axis}" for axis in range(out.dim())}
        elif signature.layer is None:
            axes[name] = {0: first, 2: "map_height", 3: "map_width"}
        else:
            axes[name] = {0: first}
    return axes


def export_onnx(
    model: Union[nn.Module, "torch.export.ExportedProgram"],
    example: Union[torch.Tensor, Sequence[torch.Tensor]],
    path: Union[str, "os.PathLike[str]"],
    *,
    opset: Optional[int] = None,
    dynamo: bool = False,
    input_name: Union[str, Sequence[str]] = "confmaps",
    output_names: Optional[Sequence[str]] = None,
    metadata: Optional[dict[str, str]] = None,
) -> pathlib.Path:
    """Export ``model`` to an ONNX file with dynamic batch, height and width.

    Args:
        model (nn.Module or ExportedProgram): a peak layer (:class:`GlobalPeaks`,
            :class:`LocalPeaks`, :class:`TopKPeaks`), a module whose last stage is one
            (e.g. ``nn.Sequential(head, LocalPeaks())``), or a plain head returning one
            4-D map. A module ending in a peak layer returns the layer's outputs first
            and may return extra outputs after them, e.g. the class probabilities of a
            :class:`~peaklayers.ClassMapLookup`. Exported in eval mode (each module's
            mode is restored afterwards). The head may be:

            - a ``torch.export`` program (``ExportedProgram``, or its ``.module()``, e.g.
              a loaded ``.pt2``): its mode is fixed in its graph, so it is not switched;
              if it was exported with bounded or fixed sizes (``Dim(min=16, max=256)``),
              the export keeps them (a model that constrains its sizes elsewhere gets a
              ``ValueError`` saying how to re-export it);
            - a TorchScript module (e.g. from ``torch.jit.load``) inside the model: with
              ``dynamo=False`` the whole model is scripted first (the tracer cannot
              enter a ScriptModule; the peak layers are scriptable); ``dynamo=True``
              refuses it (``torch.export`` cannot read TorchScript).
        example (Tensor[S, C, H, W] or tuple of them): floating-point example input(s),
            one tensor per model input, with equal batch sizes; any size (the graph is
            not tied to it; sizes of 1 are repeated to 2 so they stay dynamic).
        path (str or PathLike): the ``.onnx`` file to write (parents are created).
        opset (int, optional): default 17 with ``dynamo=False`` (allowed
            :data:`TORCHSCRIPT_OPSETS`, 16 to 20), the newest the installed exporter
            supports with ``dynamo=True`` (allowed :data:`DYNAMO_OPSETS`).
        dynamo (bool): ``torch.onnx.export(dynamo=True)`` (through ``torch.export``)
            instead of the TorchScript-based exporter.
        input_name (str or sequence of str): names of the graph inputs. A str names the
            first input; a second input is then named ``"class_maps"`` (e.g.
            ``(confmaps, class_maps)`` into peaks and a lookup); three or more inputs
            need a sequence with one name each. For a plain head (whose output is named
            ``confmaps``) the default becomes ``"image"``. Every input has dynamic batch
            (``batch``, shared by all inputs), height and width (``height``, ``width``
            for the first input, ``height_1``, ``width_1`` for the second, ...; with
            ``dynamo=True`` one height and width for all inputs if the model needs
            their sizes equal).
        output_names (sequence of str, optional): default from the final peak layer:
            ``points, vals`` (global), ``points, vals, sample_inds, channel_inds``
            (local), ``points, vals, valid`` (top-K); ``confmaps`` for a plain head;
            ``class_probs`` for an extra output made by a ``ClassMapLookup``. Any other
            extra output has no default: name all outputs.
        metadata (dict of str to str, optional): written to the model's
            ``metadata_props``, beside ``peaklayers.version`` and ``peaklayers.layer``.

    Output shapes are declared in the file: the first axis is ``peaks`` for the outputs
    of :class:`LocalPeaks` and the lookup of its points, ``batch`` for the others (a
    lookup of top-K slots); channels, K, 2 and the number of classes are fixed. Extra
    outputs of other modules keep the shapes the exporter inferred (with
    ``dynamo=False`` all their axes are dynamic).

    Returns:
        pathlib.Path: ``path``, after ``onnx.checker.check_model(full_check=True)``
        passed on the written file.

    Raises:
        TypeError: ``model`` is not a module or program, an example is not a
            floating-point tensor, names or metadata have the wrong types.
        ValueError: an example is not 4-D, the batch sizes differ, the opset is not
            supported by the chosen exporter, the model's output is neither a peak
            layer's (plus extras) nor a 4-D map, the names do not fit the inputs or the
            outputs (an extra output that is not a lookup's needs ``output_names``), or
            the model holds TorchScript that cannot be exported.
    """
    import onnx

    from .. import __version__

    model = _check_model(model)
    examples = _check_examples(example)
    bounds = _program_bounds(model, len(examples))
    examples = tuple(_widened(t, b) for t, b in zip(examples, bounds, strict=True))
    if not isinstance(dynamo, bool):
        raise TypeError("dynamo must be a bool, got " + type(dynamo).__name__)
    opset = _check_opset(opset, dynamo)
    extra = _check_metadata(metadata)
    path = pathlib.Path(path)

    with _eval_mode(model) as holds_program, exporter_noise_hidden():
        signature = _signature(model, examples)
        plain = signature.layer is None and output_names is None
        if (plain or isinstance(model, Pipeline)) and input_name == "confmaps":
            input_name = "image"
        inputs, names = _check_names(output_names, signature, input_name, len(examples))
        exported = _scripted_for_tracer(model, dynamo)
        path.parent.mkdir(parents=True, exist_ok=True)
        common = {"opset_version": opset, "input_names": list(inputs), "output_names": list(names)}
        if dynamo:
            _with_dims(
                lambda dims: torch.onnx.export(
                    exported,
                    examples,
                    str(path),
                    dynamo=True,
                    dynamic_shapes=dims,
                    external_data=False,
                    verbose=False,
                    **common,
                ),
                len(examples),
                bounds,
            )
        else:
            options: dict[str, object] = {}
            if holds_program:
                # torch.onnx would call model.train(False), which a program refuses; the
                # modes are already set above.
                options["training"] = torch.onnx.TrainingMode.PRESERVE
            torch.onnx.export(
                exported,
                examples,
                str(path),
                dynamo=False,
                dynamic_axes=_dynamic_axes(signature, inputs, names),
                **common,
                **options,
            )

    proto = onnx.load(str(path))
    _declare_output_shapes(proto, signature, names)
    props = {"peaklayers.version": __version__}
    layer = signature.layer
    if layer is not None:
        props["peaklayers.layer"] = f"{type(layer).__name__}({layer.extra_repr()})"
    props.update(extra)
    onnx.helper.set_model_props(
        proto, {**{p.key: p.value for p in proto.metadata_props}, **props}
    )
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
