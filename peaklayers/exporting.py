"""Export a peak layer, or a model ending in one, to ONNX or ``torch.export`` (SPEC §4).

Both helpers make batch, height and width dynamic, so the exported graph gives the
same output as eager PyTorch at sizes other than the example's. Channels stay fixed
(they are the model's body parts).

:func:`export_onnx` names the inputs and outputs, picks the opset and checks the file::

    import torch
    from peaklayers import TopKPeaks, export_onnx

    export_onnx(TopKPeaks(8), torch.rand(2, 17, 64, 48), "topk.onnx")
    # inputs: confmaps (batch, 17, height, width); outputs: points, vals, valid

The graph contents are audited by ``tests/test_graph_audit.py``; the README lists the
operators of every layer's graph.
"""

import os
import pathlib
import warnings
from typing import TYPE_CHECKING, Optional, Union

import torch
from torch import nn

from ._layer import PeakLayer
from .global_peaks import GlobalPeaks
from .local_peaks import LocalPeaks
from .topk_peaks import TopKPeaks

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DYNAMO_OPSETS",
    "TORCHSCRIPT_OPSETS",
    "export_onnx",
    "export_program",
    "output_names_for",
]

# GridSample (integral refinement) needs opset 16. The TorchScript-based exporter
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

_OUTPUT_NAMES = {
    GlobalPeaks: ("points", "vals"),
    LocalPeaks: ("points", "vals", "sample_inds", "channel_inds"),
    TopKPeaks: ("points", "vals", "valid"),
}
# The size each output's first axis follows: the batch, or the number of peaks.
_FIRST_AXIS = {GlobalPeaks: "batch", LocalPeaks: "peaks", TopKPeaks: "batch"}


def output_names_for(layer: nn.Module) -> tuple[str, ...]:
    """Names of a peak layer's outputs, in order.

    ``GlobalPeaks``: ``points, vals``; ``LocalPeaks``: ``points, vals, sample_inds,
    channel_inds``; ``TopKPeaks``: ``points, vals, valid``.
    """
    for cls, names in _OUTPUT_NAMES.items():
        if isinstance(layer, cls):
            return names
    raise TypeError(
        "layer must be a GlobalPeaks, LocalPeaks or TopKPeaks, got " + type(layer).__name__
    )


def _check_example(example: object) -> torch.Tensor:
    if not isinstance(example, torch.Tensor):
        raise TypeError("example must be a torch.Tensor, got " + type(example).__name__)
    if not example.is_floating_point():
        raise TypeError(
            "example must have a floating-point dtype (the model's input maps or images), got "
            + str(example.dtype)
        )
    if example.dim() != 4:
        raise ValueError(
            "example must be a 4-D tensor (batch, channels, height, width), got "
            + str(example.dim()) + "-D"
        )
    if 0 in example.shape:
        raise ValueError("example must not be empty, got shape " + str(tuple(example.shape)))
    return example


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError("model must be a torch.nn.Module, got " + type(model).__name__)
    return model


def _last_peak_layer(model: nn.Module, example: torch.Tensor) -> tuple[Optional[PeakLayer], tuple]:
    """Run ``model`` once; return the peak layer whose outputs ARE its outputs, if any.

    Returns ``(layer or None, outputs as a tuple)``.
    """
    calls: list[tuple[PeakLayer, object]] = []

    def record(module: nn.Module, args: object, output: object) -> None:
        calls.append((module, output))

    hooks = [
        m.register_forward_hook(record) for m in model.modules() if isinstance(m, PeakLayer)
    ]
    try:
        with torch.no_grad():
            output = model(example)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    if calls:
        layer, layer_output = calls[-1]
        layer_outputs = tuple(layer_output) if isinstance(layer_output, tuple) else ()
        if len(layer_outputs) == len(outputs) and all(
            a is b for a, b in zip(layer_outputs, outputs, strict=True)
        ):
            return layer, outputs
    return None, outputs


def _describe(outputs: tuple) -> str:
    parts = []
    for out in outputs:
        if isinstance(out, torch.Tensor):
            parts.append(f"Tensor{list(out.shape)}")
        else:
            parts.append(type(out).__name__)
    return "(" + ", ".join(parts) + ")"


def _signature(
    model: nn.Module, example: torch.Tensor
) -> tuple[Optional[PeakLayer], tuple[str, ...], tuple]:
    """The final peak layer (or None for a plain head), default output names, outputs."""
    layer, outputs = _last_peak_layer(model, example)
    if layer is not None:
        return layer, output_names_for(layer), outputs
    if (
        len(outputs) == 1
        and isinstance(outputs[0], torch.Tensor)
        and outputs[0].dim() == 4
        and outputs[0].is_floating_point()
    ):
        return None, ("confmaps",), outputs
    raise ValueError(
        "model must end with a peak layer (GlobalPeaks, LocalPeaks, TopKPeaks) or return "
        "one 4-D floating-point map (batch, channels, height, width); its output is "
        + _describe(outputs)
    )


def _check_opset(opset: object, dynamo: bool) -> int:
    allowed = DYNAMO_OPSETS if dynamo else TORCHSCRIPT_OPSETS
    if opset is None:
        return allowed[-1] if dynamo else _DEFAULT_TORCHSCRIPT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError("opset must be an int or None, got " + type(opset).__name__)
    if opset not in allowed:
        exporter = "dynamo=True" if dynamo else "dynamo=False"
        raise ValueError(
            f"opset {opset} is not supported with {exporter}: use {allowed[0]} to "
            f"{allowed[-1]} (GridSample needs 16; the installed exporter stops at "
            f"{allowed[-1]})"
        )
    return opset


def _check_names(
    names: object, defaults: tuple[str, ...], input_name: object
) -> tuple[str, tuple[str, ...]]:
    if not isinstance(input_name, str) or not input_name:
        raise TypeError("input_name must be a non-empty str, got " + repr(input_name))
    if names is None:
        names = defaults
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError("output_names must be a sequence of non-empty str, got " + repr(names))
    names = tuple(names)
    if len(names) != len(defaults):
        raise ValueError(
            f"output_names must name {len(defaults)} outputs {defaults}, got {len(names)}"
        )
    if len(set(names)) != len(names) or input_name in names:
        raise ValueError(
            f"input and output names must all differ, got input {input_name!r} and "
            f"outputs {names}"
        )
    return input_name, names


def _check_metadata(metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError("metadata must be a dict of str to str, got " + repr(metadata))
    return dict(metadata)


def _widened(example: torch.Tensor) -> torch.Tensor:
    """``example`` with batch, height and width of 1 repeated to 2.

    Exporters specialise a size of 1 into a constant (torch.export refuses to keep it
    dynamic); the graph of a peak layer does not depend on the values, so repeating
    the one sample, row or column loses nothing.
    """
    samples, channels, height, width = example.shape
    if 1 not in (samples, height, width):
        return example
    return example.expand(
        max(samples, 2), channels, max(height, 2), max(width, 2)
    ).contiguous()


def _dynamic_shapes() -> tuple[dict[int, object], ...]:
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=1)
    width = torch.export.Dim("width", min=1)
    return ({0: batch, 2: height, 3: width},)


def export_program(model: nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    """``torch.export.export`` of ``model`` with dynamic batch, height and width.

    Args:
        model (nn.Module): a peak layer, a module ending in one, or any module taking
            one 4-D tensor.
        example (Tensor[S, C, H, W]): floating point, any size (sizes of 1 are
            repeated to 2 so that they stay dynamic).

    Returns:
        torch.export.ExportedProgram: ``program.module()(x)`` equals ``model(x)`` for
        any batch and map size.
    """
    model = _check_model(model)
    example = _widened(_check_example(example))
    return torch.export.export(model, (example,), dynamic_shapes=_dynamic_shapes())


def _first_axis(layer: Optional[PeakLayer]) -> str:
    for cls, axis in _FIRST_AXIS.items():
        if isinstance(layer, cls):
            return axis
    return "batch"


def _declare_output_shapes(
    proto: "onnx.ModelProto", layer: Optional[PeakLayer], outputs: tuple, names: tuple[str, ...]
) -> None:
    """Write each output's shape: its first axis (and a head's map size) symbolic, the
    rest (channels, K, 2) fixed. The TorchScript-based exporter leaves channels and K
    symbolic because it reads them from the input's shape at run time.
    """
    by_name = {value.name: value for value in proto.graph.output}
    for name, out in zip(names, outputs, strict=True):
        dims: list[object] = list(out.shape)
        dims[0] = _first_axis(layer)
        if layer is None:
            dims[2], dims[3] = "map_height", "map_width"
        shape = by_name[name].type.tensor_type.shape
        shape.ClearField("dim")
        for size in dims:
            dim = shape.dim.add()
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = int(size)


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Union[str, "os.PathLike[str]"],
    *,
    opset: Optional[int] = None,
    dynamo: bool = False,
    input_name: str = "confmaps",
    output_names: Optional[tuple[str, ...]] = None,
    metadata: Optional[dict[str, str]] = None,
) -> pathlib.Path:
    """Export ``model`` to an ONNX file with dynamic batch, height and width.

    Args:
        model (nn.Module): a peak layer (:class:`GlobalPeaks`, :class:`LocalPeaks`,
            :class:`TopKPeaks`), a module whose last stage is one (e.g.
            ``nn.Sequential(head, LocalPeaks())``), or a plain head returning one 4-D
            map. Exported in eval mode (its mode is restored afterwards).
        example (Tensor[S, C, H, W]): a floating-point example input; any size (the
            graph is not tied to it; sizes of 1 are repeated to 2 so they stay dynamic).
        path (str or PathLike): the ``.onnx`` file to write (parents are created).
        opset (int, optional): default 17 with ``dynamo=False`` (allowed
            :data:`TORCHSCRIPT_OPSETS`, 16 to 20), the newest the installed exporter
            supports with ``dynamo=True`` (allowed :data:`DYNAMO_OPSETS`).
        dynamo (bool): ``torch.onnx.export(dynamo=True)`` (through ``torch.export``)
            instead of the TorchScript-based exporter.
        input_name (str): name of the graph input. For a plain head (whose output is
            named ``confmaps``) the default becomes ``"image"``.
        output_names (sequence of str, optional): default from the final peak layer:
            ``points, vals`` (global), ``points, vals, sample_inds, channel_inds``
            (local), ``points, vals, valid`` (top-K); ``confmaps`` for a plain head.
        metadata (dict of str to str, optional): written to the model's
            ``metadata_props``, beside ``peaklayers.version`` and ``peaklayers.layer``.

    Returns:
        pathlib.Path: ``path``, after ``onnx.checker.check_model(full_check=True)``
        passed on the written file.

    Raises:
        TypeError: ``model`` is not a module, ``example`` is not a floating-point
            tensor, names or metadata have the wrong types.
        ValueError: ``example`` is not 4-D, the opset is not supported by the chosen
            exporter, the model's output is neither a peak layer's nor a 4-D map, or
            the names do not fit the outputs.
    """
    import onnx

    from . import __version__

    model = _check_model(model)
    example = _widened(_check_example(example))
    if not isinstance(dynamo, bool):
        raise TypeError("dynamo must be a bool, got " + type(dynamo).__name__)
    opset = _check_opset(opset, dynamo)
    extra = _check_metadata(metadata)
    path = pathlib.Path(path)

    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        layer, defaults, outputs = _signature(model, example)
        if layer is None and input_name == "confmaps" and output_names is None:
            input_name = "image"
        input_name, names = _check_names(output_names, defaults, input_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if dynamo:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=[input_name],
                output_names=list(names),
                dynamic_shapes=_dynamic_shapes(),
                external_data=False,
                verbose=False,
            )
        else:
            axes: dict[str, dict[int, str]] = {input_name: {0: "batch", 2: "height", 3: "width"}}
            first = _first_axis(layer)
            for name in names:
                axes[name] = {0: first}
            if layer is None:
                axes[names[0]] = {0: "batch", 2: "map_height", 3: "map_width"}
            with warnings.catch_warnings():
                # The layers' argument checks read static facts (rank, dtype, non-empty
                # maps); the tracer warns about each such Python bool. Warnings from the
                # user's own modules still show.
                warnings.filterwarnings(
                    "ignore", category=torch.jit.TracerWarning, module=r"peaklayers\."
                )
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[input_name],
                    output_names=list(names),
                    dynamic_axes=axes,
                )
    finally:
        for module, mode in training:
            module.train(mode)

    proto = onnx.load(str(path))
    _declare_output_shapes(proto, layer, outputs, names)
    props = {"peaklayers.version": __version__}
    if layer is not None:
        props["peaklayers.layer"] = f"{type(layer).__name__}({layer.extra_repr()})"
    props.update(extra)
    onnx.helper.set_model_props(
        proto, {**{p.key: p.value for p in proto.metadata_props}, **props}
    )
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path
