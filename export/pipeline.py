"""``python -m export pipeline KIND HEAD [HEAD]``: a whole pipeline (frames in, frame-pixel
points out) around the user's trained heads, exported, verified and written (SPEC §5).

KIND is ``single-instance``, ``centroid``, ``top-down``, ``multiclass-top-down`` or
``multiclass-bottom-up`` (one head: part maps and class maps; no sleap-nn format). HEADs are
TorchScript archives, ``torch.export`` programs or ONNX models taking float ``[0, 1]``
images (ONNX heads: :mod:`.pipeline_onnx`). The graph
takes uint8 frames (``--float-input``: float32 in ``[0, 1]``). ``--format peaklayers``
writes ONNX and TorchScript (or ``.pt2``), each verified against eager PyTorch on frames of
two sizes; ``--format sleap-nn`` writes the reference library's directory (``model.onnx``
and ``export_metadata.json``), verified the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from peaklayers import (
    CentroidPipeline,
    MultiClassBottomUpPipeline,
    MultiClassTopDownPipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)
from peaklayers.exporting.sleap_nn import export_sleap_nn, sleap_nn_outputs

from . import loaders
from .common import ToolError, first_line, step
from .formats import FORMATS, Job, effective_opset, torch_backend
from .steps import TritonOptions, check_outputs, export_verify_write, format_writer

KINDS = ("single-instance", "centroid", "top-down", "multiclass-top-down",
         "multiclass-bottom-up")
ONE_HEAD = ("single-instance", "centroid", "multiclass-bottom-up")
PIPELINE_FORMATS = ("peaklayers", "sleap-nn")


def _load_head(path: str) -> tuple[torch.nn.Module, str, tuple | None]:
    """The head module, its kind and the shape of a stored example (``.pt2``).

    ONNX heads never reach here: they are joined in :mod:`.pipeline_onnx`.
    """
    head_path = Path(path)
    kind = loaders.detect_kind(head_path)
    if kind == "torchscript":
        return loaders.load_torchscript(head_path), kind, None
    program, shape = loaders.load_program(head_path)
    return program.module(), kind, shape


def _pair(text: str | None, what: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ToolError(f"{what} must be H,W or one integer, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ToolError(f"{what} must be two positive integers H,W, got {text!r}")
    return values[0], values[1]


def _selector(text: str | None) -> int | str | None:
    if text is None:
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def frames_for(shape: tuple[int, ...], uint8: bool, seed: int = 0) -> np.ndarray:
    """Smooth random frames with a few bright blobs (peaks for every head to find)."""
    rng = np.random.default_rng(seed)
    samples, channels, height, width = shape
    ys, xs = np.mgrid[0:height, 0:width]
    image = rng.random(shape) * 0.05
    sigma2 = 2 * (min(height, width) / 16) ** 2
    for s in range(samples):
        for _ in range(3):
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            image[s] += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / sigma2)
    image = np.clip(image, 0, 1)
    if uint8:
        return np.ascontiguousarray(np.round(image * 255).astype(np.uint8))
    return np.ascontiguousarray(image.astype(np.float32))


def verification_frames(shape: tuple[int, ...], uint8: bool) -> list[np.ndarray]:
    """The frames every pipeline export is verified on: ``shape`` and a larger batch and
    frame (the graph must not keep the example's sizes)."""
    other = (shape[0] + 1, shape[1], shape[2] + 32, shape[3] + 48)
    return [frames_for(shape, uint8), frames_for(other, uint8, seed=1)]


def _split_names(text: str | None, count: int | None, flag: str, what: str
                 ) -> list[str] | None:
    if text is None:
        return None
    names = text.split(",")
    if count is None:
        raise ToolError(f"{flag}: this pipeline has no {what}")
    if len(names) != count or not all(names) or len(set(names)) != len(names):
        raise ToolError(f"{flag} must give {count} different non-empty names (the pipeline's "
                        f"{what}), got {text!r}")
    return names


def labels(outputs: dict[str, torch.Tensor], node_names: str | None, class_names: str | None
           ) -> tuple[list[str] | None, list[str] | None]:
    """``--node-names`` and ``--class-names`` as lists, checked against the pipeline's
    outputs (by name, ours or the sleap-nn format's): one name per body part of ``peaks``,
    one per class of ``class_probs`` (``class_logits``)."""
    peaks = outputs.get("peaks")
    classes = outputs.get("class_probs", outputs.get("class_logits"))
    # Body parts are the axis before (x, y), or axis 1 before the bottom-up slots.
    parts_axis = 1 if "peak_valid" in outputs else -2
    nodes = _split_names(node_names, None if peaks is None else int(peaks.shape[parts_axis]),
                         "--node-names", "body parts")
    names = _split_names(class_names, None if classes is None else int(classes.shape[-1]),
                         "--class-names", "classes")
    return nodes, names


def build(kind: str, heads: list[torch.nn.Module], *, crop_size, max_instances, stride,
          centroid_stride, instance_stride, input_scale, max_stride, instance_input_scale,
          threshold, peak_threshold, refinement, patch_size, instance_output, class_output,
          max_peaks=None, class_stride=None):
    """The pipeline module for ``kind``; ValueError/TypeError name the bad setting."""
    peaks = dict(input_scale=input_scale, max_stride=max_stride, threshold=threshold,
                 refinement=None if refinement == "none" else refinement,
                 patch_size=patch_size)
    if kind == "single-instance":
        return SingleInstancePipeline(heads[0], stride=stride, head_output=instance_output,
                                      **peaks)
    if kind == "centroid":
        return CentroidPipeline(heads[0], max_instances, stride=stride, **peaks)
    if kind == "multiclass-bottom-up":
        return MultiClassBottomUpPipeline(
            heads[0], max_peaks, stride=stride, class_stride=class_stride,
            maps_output=0 if instance_output is None else instance_output,
            class_output=1 if class_output is None else class_output, **peaks)
    settings = dict(centroid_stride=centroid_stride, instance_stride=instance_stride,
                    instance_input_scale=instance_input_scale, peak_threshold=peak_threshold,
                    **peaks)
    if kind == "top-down":
        return TopDownPipeline(heads[0], heads[1], crop_size, max_instances,
                               instance_output=instance_output, **settings)
    return MultiClassTopDownPipeline(
        heads[0], heads[1], crop_size, max_instances,
        instance_output=0 if instance_output is None else instance_output,
        class_output=1 if class_output is None else class_output, **settings)


def run(kind: str, heads: list[str], out: str, format: str = "peaklayers",
        crop_size: str | None = None, max_instances: int | None = None,
        stride: float = 1.0, centroid_stride: float = 1.0, instance_stride: float = 1.0,
        input_scale: float = 1.0, max_stride: int = 1, instance_input_scale: float = 1.0,
        threshold: float = 0.2, peak_threshold: float = 0.2, refinement: str = "integral",
        patch_size: int = 5, node_names: str | None = None, class_names: str | None = None,
        input_shape: str | None = None,
        float_input: bool = False, instance_output: str | None = None,
        class_output: str | None = None, provider: str = "auto", opset: int | None = None,
        max_peaks: int | None = None, class_stride: float | None = None,
        **_: object) -> dict:
    """Build the ``kind`` pipeline around ``heads``, export, verify, write ``out``."""
    wanted = 1 if kind in ONE_HEAD else 2
    if len(heads) != wanted:
        raise ToolError(f"pipeline {kind} takes {wanted} head file(s), got {len(heads)}")
    if kind in ("centroid", "top-down", "multiclass-top-down") and max_instances is None:
        raise ToolError(f"pipeline {kind} needs --max-instances")
    crop = _pair(crop_size, "--crop-size")
    if kind in ("top-down", "multiclass-top-down") and crop is None:
        raise ToolError(f"pipeline {kind} needs --crop-size H,W")
    if kind == "multiclass-bottom-up" and max_peaks is None:
        raise ToolError(f"pipeline {kind} needs --max-peaks (peak slots per body part)")
    if kind == "multiclass-bottom-up" and format == "sleap-nn":
        raise ToolError(f"--format sleap-nn has no {kind} model type (the reference's "
                        "exported-model format covers single-instance, centroid and top-down "
                        "pipelines): use --format peaklayers")
    if format == "sleap-nn" and float_input:
        raise ToolError("--format sleap-nn takes uint8 frames: drop --float-input")
    check_outputs(Path(out), None)
    settings = dict(crop_size=crop, max_instances=max_instances, stride=stride,
                    centroid_stride=centroid_stride, instance_stride=instance_stride,
                    input_scale=input_scale, max_stride=max_stride,
                    instance_input_scale=instance_input_scale, threshold=threshold,
                    peak_threshold=peak_threshold, refinement=refinement, patch_size=patch_size,
                    max_peaks=max_peaks, class_stride=class_stride)
    if any(loaders.detect_kind(Path(p)) == "onnx" for p in heads):
        from .pipeline_onnx import run_with_onnx_heads

        return run_with_onnx_heads(
            kind, heads, out, lambda modules: build(kind, modules, **settings,
                                                    instance_output=None, class_output=None),
            format=format, input_shape=input_shape, float_input=float_input,
            instance_output=instance_output, class_output=class_output,
            node_names=node_names, class_names=class_names, provider=provider, opset=opset)

    loaded = [_load_head(p) for p in heads]
    kinds = {k for _, k, _ in loaded}
    if len(kinds) > 1:
        raise ToolError("give both heads in the same form (both TorchScript or both .pt2)")
    head_kind = kinds.pop()
    try:
        pipeline = build(kind, [m for m, _, _ in loaded], **settings,
                         instance_output=_selector(instance_output),
                         class_output=_selector(class_output)).eval()
    except (ValueError, TypeError) as error:
        raise ToolError(str(error)) from None
    stored = loaded[0][2]
    shape = loaders.parse_shape(input_shape, stored, f"a {head_kind} head (frames C,H,W)")

    uint8 = not float_input
    inputs = verification_frames(shape, uint8)
    example = torch.from_numpy(inputs[0])
    graph = sleap_nn_outputs(pipeline).eval() if format == "sleap-nn" else pipeline
    try:
        with torch.no_grad():
            for x in inputs:
                graph(torch.from_numpy(x))
    except (ValueError, TypeError, RuntimeError) as error:
        raise ToolError(f"the heads do not fit the {kind} pipeline: {first_line(error)}") from None

    dynamo = head_kind == "pt2"
    opset = effective_opset(opset, dynamo)
    names = list(graph.output_names)
    outs = graph(example)
    nodes, classes = labels(dict(zip(names, outs, strict=True)), node_names, class_names)
    meta = {
        "source": ", ".join(f"{Path(p).name} ({head_kind})" for p in heads),
        "layer": {"pipeline": kind, "settings": pipeline.extra_repr(), "format": format},
        "inputs": [{"name": "image", "shape": ["batch", shape[1], "height", "width"],
                    "dtype": "uint8" if uint8 else "float32"}],
        "outputs": [{"name": n, "shape": ["batch", *list(t.shape[1:])],
                     "dtype": str(t.dtype).removeprefix("torch.")}
                    for n, t in zip(names, outs, strict=True)],
        "opset": opset,
        "node_names": nodes,
        "class_names": classes,
        "versions": {"torch": torch.__version__},
    }
    job = Job(graph, example, "image", names, meta, opset=opset, dynamo=dynamo)
    out_path = Path(out)
    if format == "peaklayers":
        formats = ("pt2" if dynamo else "torchscript", "onnx")
        write = format_writer(job, formats, out_path)
    else:
        def write(stage: Path) -> dict[str, Path]:
            with step("sleap-nn directory", out_path) as info:
                staging = stage / "sleap-nn"
                try:
                    export_sleap_nn(pipeline, example, staging, node_names=nodes,
                                    class_names=classes, opset=opset, dynamo=dynamo)
                except (ValueError, TypeError) as error:
                    raise ToolError(str(error)) from None
                for item in staging.iterdir():
                    shutil.move(str(item), str(stage / item.name))
                staging.rmdir()
                info["file"] = stage / "model.onnx"
            return {"onnx": stage / "model.onnx"}

    return export_verify_write(write, torch_backend(graph), names, meta, out_path, inputs,
                               provider, f"peaklayers {kind} pipeline",
                               triton_options=TritonOptions())


__all__ = ["FORMATS", "KINDS", "ONE_HEAD", "PIPELINE_FORMATS", "build", "frames_for", "run",
           "verification_frames"]
