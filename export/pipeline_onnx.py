"""``python -m export pipeline KIND HEAD.onnx [HEAD2.onnx]``: a pipeline around ONNX heads.

The pipeline's own stages are exported from the library's modules and joined with the
heads by :func:`peaklayers.exporting.compose.compose_pipeline` (``onnx.compose``; no
PyTorch source for the heads). The one file written is ``model.onnx``, verified against
the same pipeline run eagerly (stages in PyTorch, heads in ONNX Runtime on the CPU) on
frames of two sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from peaklayers.exporting.compose import compose_pipeline, joined_opset, onnx_heads
from peaklayers.exporting.onnx_head import OnnxHead

from . import loaders
from .common import ToolError, first_line, step
from .formats import METADATA_KEY, Job, torch_backend
from .model import DEFAULT_SIZE
from .pipeline import _selector, labels, verification_frames
from .steps import TritonOptions, export_verify_write

Build = Callable[[list[torch.nn.Module]], torch.nn.Module]


def _heads(kind: str, paths: list[str], instance_output: str | None,
           class_output: str | None) -> list[OnnxHead]:
    """One :class:`OnnxHead` per file, reading the outputs the pipeline needs: the first
    output of a centroid head (as for TorchScript heads); the ``--instance-output`` of the
    other heads (default the first), and the ``--class-output`` (default the second) of a
    multi-class one (the instance head, or the bottom-up head)."""
    top_down = kind in ("top-down", "multiclass-top-down")
    heads = []
    for index, path in enumerate(paths):
        role = ("centroid head" if index == 0 else "instance head") if top_down else "head"
        try:
            head = OnnxHead(path, name=f"{role} {path}")
        except ValueError as error:
            raise ToolError(str(error)) from None
        if (kind == "multiclass-top-down" and index == 1) or kind == "multiclass-bottom-up":
            maps, classes = _selector(instance_output), _selector(class_output)
            chosen = (0 if maps is None else maps, 1 if classes is None else classes)
            flags = "--instance-output/--class-output"
        elif index == 1 or kind == "single-instance":
            chosen, flags = _selector(instance_output), "--instance-output"
        else:
            chosen, flags = None, ""
        try:
            head.output_names = head.select(chosen)
        except ValueError as error:
            raise ToolError(f"{flags}: {error}" if flags else str(error)) from None
        heads.append(head)
    return heads


def _frame_shape(head: OnnxHead, input_shape: str | None) -> tuple[int, ...]:
    channels = head.input_dims[1]
    fallback = None if channels is None else (1, channels, DEFAULT_SIZE, DEFAULT_SIZE)
    shape = loaders.parse_shape(input_shape, fallback,
                                f"{head.name} (its channels are dynamic; frames C,H,W)")
    if channels is not None and shape[1] != channels:
        raise ToolError(f"--input-shape has {shape[1]} channel(s) but {head.name} takes "
                        f"{channels}")
    return shape


def run_with_onnx_heads(kind: str, paths: list[str], out: str, make: Build, *,
                        format: str, input_shape: str | None, float_input: bool,
                        instance_output: str | None, class_output: str | None,
                        node_names: str | None, class_names: str | None, provider: str,
                        opset: int | None) -> dict:
    """Build the ``kind`` pipeline around the ONNX heads at ``paths``, join, verify, write.

    ``make(modules)`` builds the pipeline module with the tool's settings, each head's
    selected outputs as it returns them; ToolError for anything the user must change.
    """
    forms = [loaders.detect_kind(Path(p)) for p in paths]
    if set(forms) != {"onnx"}:
        given = ", ".join(f"{Path(p).name} ({k})" for p, k in zip(paths, forms, strict=True))
        raise ToolError("give both heads in the same form: both ONNX, or both TorchScript/.pt2 "
                        f"(got {given})")
    if format != "peaklayers":
        raise ToolError(f"--format {format} is not available with ONNX heads; use --format "
                        "peaklayers")
    if opset is not None:
        raise ToolError("--opset does not apply to ONNX heads: the pipeline follows the "
                        "heads' own opset")
    heads = _heads(kind, paths, instance_output, class_output)
    try:
        pipeline = make(heads).eval()
        onnx_heads(pipeline)
    except (ValueError, TypeError) as error:
        raise ToolError(str(error)) from None
    shape = _frame_shape(heads[0], input_shape)

    uint8 = not float_input
    inputs = verification_frames(shape, uint8)
    example = torch.from_numpy(inputs[0])
    try:
        with torch.no_grad():
            for x in inputs:
                pipeline(torch.from_numpy(x))
    except ToolError:
        raise
    except Exception as error:  # ONNX Runtime's errors on the user's head, or the stages'
        raise ToolError(f"the heads do not fit the {kind} pipeline: {first_line(error)}"
                        ) from None

    names = list(pipeline.output_names)
    with torch.no_grad():
        outs = pipeline(example)
    nodes, classes = labels(dict(zip(names, outs, strict=True)), node_names, class_names)
    meta = {
        "source": ", ".join(f"{Path(p).name} (onnx)" for p in paths),
        "layer": {"pipeline": kind, "settings": pipeline.extra_repr(), "format": format,
                  "joined": "onnx.compose"},
        "inputs": [{"name": "image", "shape": ["batch", shape[1], "height", "width"],
                    "dtype": "uint8" if uint8 else "float32"}],
        "outputs": [{"name": n, "shape": ["batch", *list(t.shape[1:])],
                     "dtype": str(t.dtype).removeprefix("torch.")}
                    for n, t in zip(names, outs, strict=True)],
        "opset": joined_opset(heads),
        "node_names": nodes,
        "class_names": classes,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
    }
    out_path = Path(out)

    def write(stage: Path) -> dict[str, Path]:
        with step("ONNX (stages joined with the heads by onnx.compose)", out_path) as info:
            try:
                model = compose_pipeline(pipeline, example,
                                         metadata={METADATA_KEY: Job.metadata_json_of(meta)})
            except (ValueError, TypeError) as error:
                raise ToolError(str(error)) from None
            info["file"] = stage / "model.onnx"
            onnx.save(model, str(info["file"]))
        return {"onnx": info["file"]}

    notes = ["ONNX heads: the reference is the pipeline's stages in eager PyTorch with the "
             "heads in ONNX Runtime (CPU); the written graph joins them with onnx.compose."]
    return export_verify_write(write, torch_backend(pipeline), names, meta, out_path, inputs,
                               provider, f"peaklayers {kind} pipeline (ONNX heads)",
                               triton_options=TritonOptions(), notes=notes)
