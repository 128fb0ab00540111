"""``python -m export model PATH``: the peak layers appended to the user's own trained head.

- TorchScript archive → TorchScript + ONNX of head + peak layer;
- ``torch.export`` program (``.pt2``) → ``.pt2`` + ONNX (through the dynamo exporter);
- ONNX model → ONNX, the peak graph appended with ``onnx.compose`` (no PyTorch source).

Each result is verified against eager PyTorch (for ONNX: ONNX Runtime on the user's model,
then the library's peak layer in PyTorch on its confidence maps) on smooth random inputs
of two sizes (the example's, and a larger one when the model's sizes are dynamic).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch

from peaklayers.runtime import RUNTIME_ERRORS

from . import loaders, onnx_append
from .common import ToolError, first_line, step
from .formats import METADATA_KEY, Job, effective_opset, torch_backend
from .graphs import compose, head_outputs
from .report import metadata
from .sessions import open_peak_session
from .settings import LayerSettings
from .steps import TritonOptions, check_outputs, export_verify_write, format_writer

DEFAULT_SIZE = 64  # for dynamic height/width of an ONNX input
# Example and verification inputs are float32 arrays: 2**27 values are 512 MiB each.
MAX_INPUT_ELEMENTS = 2**27


def smooth_inputs(shapes: list[tuple[int, ...]], dtype=np.float32, seed: int = 0) -> list:
    """Random inputs in [0, 1] blurred by a 5x5 box: near-ties between pixels are rare."""
    rng = np.random.default_rng(seed)
    inputs = []
    for shape in shapes:
        x = rng.random((shape[0], shape[1], shape[2] + 4, shape[3] + 4))
        x = sum(x[:, :, i:i + shape[2], j:j + shape[3]] for i in range(5) for j in range(5)) / 25
        inputs.append(np.ascontiguousarray(x, dtype=dtype))
    return inputs


def _check_size(*shapes: tuple[int, ...]) -> None:
    """Refuse example inputs too large to make (before any memory is taken for them)."""
    for shape in shapes:
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise ToolError(f"an input of shape {shape} has {math.prod(shape):,} values, more than "
                            f"the {MAX_INPUT_ELEMENTS:,} this tool verifies with; give a smaller "
                            "--input-shape (the exported graph has dynamic sizes anyway)")


def _other_shape(shape: tuple[int, ...], dynamic: tuple[bool, bool, bool, bool]):
    """A second verification shape: batch + 1, height + 32, width + 64 where dynamic."""
    grow = (1, 0, 32, 64)
    return tuple(s + g if d else s for s, g, d in zip(shape, grow, dynamic, strict=True))


def run(path: str, out: str, input_name: str | None = None, input_shape: str | None = None,
        output_name: str | None = None, class_maps_output: str | None = None,
        layer: str = "local", k: int = 8, threshold: float = 0.2, refinement: str = "integral",
        patch_size: int = 5, stride: float | None = None, class_maps: bool = False,
        force: bool = False, provider: str = "auto", opset: int | None = None,
        triton: str | None = None, max_batch_size: int = 8, triton_instances: int = 1,
        triton_kind: str = "gpu", **_: object) -> dict:
    """Append the chosen peak layer to the model at ``path``, export, verify, write ``out``."""
    settings = LayerSettings.from_args(layer, k, threshold, refinement, patch_size, stride,
                                       class_maps, force, default_stride=1.0)
    model_path = Path(path)
    kind = loaders.detect_kind(model_path)
    triton_options = TritonOptions(triton, max_batch_size, triton_instances, triton_kind)
    check_outputs(Path(out), triton_options)
    common = dict(settings=settings, out=Path(out), provider=provider,
                  triton_options=triton_options, source=f"{model_path.name} ({kind})")
    if kind == "onnx":
        if input_name is not None:
            raise ToolError("--input-name is for TorchScript and .pt2 models; an ONNX model "
                            "keeps its own input name")
        return _from_onnx(model_path, output_name, class_maps_output, input_shape, opset,
                          **common)
    if output_name or class_maps_output:
        raise ToolError("--output-name/--class-maps-output are for ONNX models; a TorchScript "
                        "or .pt2 head returns its confidence maps first, class maps second")
    if kind == "torchscript":
        head, stored_shape = loaders.load_torchscript(model_path), None
        formats, dynamo = ("torchscript", "onnx"), False
    else:
        program, stored_shape = loaders.load_program(model_path)
        head = program.module()  # peaklayers.export_onnx leaves its fixed mode alone
        formats, dynamo = ("pt2", "onnx"), True
    shape = loaders.parse_shape(input_shape, stored_shape, f"a {kind} model")
    _check_size(shape, _other_shape(shape, (True, False, True, True)))
    example = torch.from_numpy(smooth_inputs([shape])[0])
    outs, returns_tuple = head_outputs(head, example)
    graph = compose(head, settings, head_returns_tuple=returns_tuple, n_outputs=len(outs))
    other = _other_shape(shape, (True, False, True, True))
    try:  # the exported graph has dynamic batch/height/width: the head must accept them
        head_outputs(head, torch.from_numpy(smooth_inputs([other])[0]))
    except ToolError:
        raise ToolError(f"the model accepts {shape} but not {other}: export it with dynamic "
                        "batch, height and width (torch.export: dynamic_shapes)") from None
    inputs = smooth_inputs([shape, other])
    opset = effective_opset(opset, dynamo)
    name = input_name or "images"
    meta = _metadata(common, settings, name, shape, "float32", outs, opset)
    job = Job(graph, example, name, settings.output_names(), meta, opset=opset, dynamo=dynamo)
    return export_verify_write(format_writer(job, formats, common["out"]), torch_backend(graph),
                               job.output_names, meta, common["out"], inputs, provider,
                               "peaklayers model export", triton_options=triton_options)


def _metadata(common: dict, settings: LayerSettings, name: str, shape: tuple, dtype: str,
              outs: list, opset: int) -> dict:
    return metadata(source=common["source"], settings=settings, input_name=name,
                    input_shape=["batch", shape[1], "height", "width"], input_dtype=dtype,
                    channels=int(outs[0].shape[1]),
                    classes=int(outs[1].shape[1]) if settings.class_maps else None, opset=opset,
                    maps_dtype=str(outs[0].dtype).removeprefix("torch."))


def _dims(model: onnx.ModelProto) -> tuple[str, list]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        raise ToolError(f"the ONNX model must have one input (an image batch), it has "
                        f"{[v.name for v in inputs]}")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _from_onnx(model_path: Path, output_name: str | None, class_maps_output: str | None,
               input_shape: str | None, opset: int | None, *, settings: LayerSettings,
               out: Path, provider: str, triton_options: TritonOptions, source: str) -> dict:
    if opset is not None:
        raise ToolError("--opset does not apply to an ONNX model: the peak graph follows the "
                        "model's own opset")
    head = loaders.load_onnx(model_path)
    name, dims = _dims(head)
    if len(dims) != 4:
        raise ToolError(f"the ONNX model's input {name!r} is {len(dims)}-D; expected "
                        "(batch, channels, height, width)")
    dynamic = tuple(d is None for d in dims)
    fallback = None if dims[1] is None else tuple(
        d if d is not None else (1 if i == 0 else DEFAULT_SIZE) for i, d in enumerate(dims))
    shape = loaders.parse_shape(input_shape, fallback, "this ONNX model (its channels are dynamic)")
    _check_size(shape, _other_shape(shape, dynamic))
    if any(d is not None and d != s for d, s in zip(dims, shape, strict=True)):
        raise ToolError(f"--input-shape {shape} does not fit the model's input {dims}")

    outputs = [v.name for v in head.graph.output]
    cms_name = output_name or outputs[0]
    if cms_name not in outputs:
        raise ToolError(f"the ONNX model has no output {cms_name!r}; its outputs are {outputs}")
    cls_name = None
    if settings.class_maps:
        cls_name = class_maps_output or next((o for o in outputs if o != cms_name), None)
        if cls_name not in outputs:
            raise ToolError("--class-maps needs a second ONNX output with the class maps "
                            f"(--class-maps-output); the outputs are {outputs}")
    rank = onnx_append.output_rank(head, cms_name)
    if rank is not None and rank != 4:
        raise ToolError(f"the ONNX model's output {cms_name!r} is {rank}-D; a confidence map "
                        "must be 4-D (batch, channels, height, width)")

    elem = head.graph.input[[v.name for v in head.graph.input].index(name)].type.tensor_type
    dtype = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16}.get(
        elem.elem_type)
    if dtype is None:
        raise ToolError(f"the ONNX model's input {name!r} must be float32 or float16")
    other = _other_shape(shape, dynamic)
    inputs = smooth_inputs([shape, other] if other != shape else [shape], dtype)
    head_session = open_peak_session(model_path, "cpu")

    def head_maps(x: np.ndarray) -> list[np.ndarray]:
        try:
            result = head_session.session.run([cms_name] + ([cls_name] if cls_name else []),
                                              {name: x})
        except RUNTIME_ERRORS as error:
            raise ToolError(f"the ONNX model failed on an input of shape {x.shape}: "
                            f"{first_line(error)}") from None
        if result[0].ndim != 4:
            raise ToolError(f"the ONNX model's output {cms_name!r} is {result[0].ndim}-D; a "
                            "confidence map must be 4-D (batch, channels, height, width)")
        return result

    maps = head_maps(inputs[0])
    for x in inputs[1:]:
        head_maps(x)
    peaks = settings.build().eval()

    def reference(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():  # maps, and class maps with --class-maps
            found = peaks(*(torch.from_numpy(m) for m in head_maps(x)))
        return [t.numpy() for t in found]

    target_opset = max(onnx_append.opset_of(head), 16)
    meta = _metadata(dict(source=source), settings, name, shape, np.dtype(dtype).name,
                     [torch.from_numpy(m) for m in maps], target_opset)
    axis_names = ("batch", "channels", "height", "width")
    meta["inputs"][0]["shape"] = [axis_names[i] if d is None else d for i, d in enumerate(dims)]

    def written(stage: Path) -> dict[str, Path]:
        with step("ONNX (appended with onnx.compose)", out) as info:
            merged = onnx_append.append_peaks(
                head, settings, cms_name, cls_name, maps[0],
                maps[1] if cls_name else None, {METADATA_KEY: Job.metadata_json_of(meta)})
            info["file"] = stage / "model.onnx"
            onnx.save(merged, str(info["file"]))
        return {"onnx": info["file"]}

    notes = [f"The model's input shape is fixed at {shape}: verified at that shape only."
             ] if len(inputs) == 1 else None
    return export_verify_write(written, reference, settings.output_names(), meta, out, inputs,
                               provider, "peaklayers model export",
                               triton_options=triton_options, notes=notes)
