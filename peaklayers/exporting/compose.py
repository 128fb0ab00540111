"""A pipeline around ONNX heads as one ONNX graph, joined with ``onnx.compose`` (SPEC §5).

The pipeline's own parts are its stage methods (:meth:`~peaklayers.Pipeline.prepare`,
``find_peaks``, ``find_centroids``, ``centroids_and_crops``, ``instance_peaks``,
``instance_peaks_and_classes``), each exported on its own with the TorchScript-based
exporter (dynamic batch, frame and map sizes), and joined with the heads in the order
``forward`` calls them::

    single-instance   image → prepare → head → find_peaks
    centroid          image → prepare → head → find_centroids
    top-down          image → prepare → centroid head → centroids_and_crops(image, ·)
                            → instance head (crops) → instance_peaks(·, valid, top_left)
    multi-class       ... → instance head → instance_peaks_and_classes(maps, classes, ...)

Every part's internal names get a prefix (``stage1/``, ``head/``, ...) with
``onnx.compose.add_prefix``, so nothing clashes with names in the heads. All parts must
share one default-domain opset: the stages are exported at the heads' opset (clamped to
the exporter's 16..20), and whichever side is older is converted up with
``onnx.version_converter``; a head that cannot be converted is an error that says so.

The reference for such a graph is the same pipeline run eagerly: its stages in PyTorch,
its :class:`~.onnx_head.OnnxHead` heads in ONNX Runtime.
"""

import io
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from ..ops.pipelines import Pipeline
from ._noise import exporter_noise_hidden
from .export import TORCHSCRIPT_OPSETS
from .onnx_head import OnnxHead

if TYPE_CHECKING:
    import onnx

__all__ = ["compose_pipeline", "joined_opset", "onnx_heads"]

_HEADS = {  # pipeline kind → (attribute of the head, role, outputs read)
    "single_instance": (("head", "head", 1),),
    "centroid": (("head", "head", 1),),
    "topdown": (("centroid_head", "centroid head", 1), ("instance_head", "instance head", 1)),
    "multi_class_topdown": (("centroid_head", "centroid head", 1),
                            ("instance_head", "instance head", 2)),
}


def onnx_heads(pipeline: Pipeline) -> list[OnnxHead]:
    """The pipeline's :class:`OnnxHead` heads, in ``forward``'s order, checked for it.

    A head read by the frames (every head but top-down's instance head) needs dynamic
    height and width: frame sizes vary. Each head's selected outputs must be exactly what
    the pipeline reads (one: the maps; the multi-class instance head two: maps and class
    vectors), chosen with ``OnnxHead(outputs=...)`` and the pipeline's selectors left at
    their defaults.

    Raises:
        TypeError: ``pipeline`` is not a pipeline, or a head is not an :class:`OnnxHead`.
        ValueError: a frame head has a fixed height or width; the selections do not fit.
    """
    if not isinstance(pipeline, Pipeline) or pipeline.kind not in _HEADS:
        raise TypeError("pipeline must be one of peaklayers' pipelines, got "
                        + type(pipeline).__name__)
    heads = []
    for attribute, role, count in _HEADS[pipeline.kind]:
        wrapper = getattr(pipeline, attribute)
        head = wrapper.head
        if not isinstance(head, OnnxHead):
            raise TypeError(f"the {role} must be an OnnxHead to be joined with onnx.compose, "
                            f"got {type(head).__name__}")
        plain = (type(wrapper).__name__ == "_Whole" if count == 1 else
                 (getattr(wrapper, "first", None), getattr(wrapper, "second", None)) == (0, 1))
        if not plain or len(head.output_names) != count:
            raise ValueError(f"{head.name}: the {role} must return exactly the "
                             f"{'maps' if count == 1 else 'maps and the class vectors'} "
                             "(choose them with OnnxHead(outputs=...)), it returns "
                             f"{list(head.output_names)}")
        if attribute != "instance_head" and any(d is not None for d in head.input_dims[2:]):
            raise ValueError(f"{head.name} has a fixed input height/width "
                             f"{head.input_dims[2:]}; the {role} of a pipeline reads frames "
                             "of any size: re-export it with dynamic height and width axes")
        heads.append(head)
    return heads


def _stage_opset(heads: list[OnnxHead]) -> int:
    """The opset the stages are exported at: the heads' newest, within the exporter's."""
    newest = max(h.opset() for h in heads)
    return min(max(newest, TORCHSCRIPT_OPSETS[0]), TORCHSCRIPT_OPSETS[-1])


def joined_opset(heads: list[OnnxHead]) -> int:
    """The default-domain opset of the joined graph: the heads' newest, at least the
    stages' (older parts are converted up to it)."""
    return max(max(h.opset() for h in heads), _stage_opset(heads))


class _Stage(nn.Module):
    """One stage method of a pipeline as a module (for the exporter)."""

    def __init__(self, pipeline: Pipeline, method: str) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.method = method

    def forward(self, *args: torch.Tensor):
        return getattr(self.pipeline, self.method)(*args)


def _export_stage(pipeline: Pipeline, method: str, examples: tuple, inputs: list[str],
                  outputs: list[str], axes: dict, opset: int) -> "onnx.ModelProto":
    import onnx

    buffer = io.BytesIO()
    with exporter_noise_hidden(), torch.no_grad():
        torch.onnx.export(_Stage(pipeline, method).eval(), examples, buffer, dynamo=False,
                          opset_version=opset, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def _default_opset(model: "onnx.ModelProto") -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("the model imports no default-domain opset")


def _converted(model: "onnx.ModelProto", opset: int, what: str) -> "onnx.ModelProto":
    import onnx
    from onnx import version_converter

    if _default_opset(model) == opset:
        return model
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except Exception as error:  # the converter raises whatever its C++ side threw
        raise ValueError(f"cannot join {what} with the pipeline: converting it to ONNX opset "
                         f"{opset} failed ({str(error).splitlines()[0]}); re-export it at "
                         f"an opset from {TORCHSCRIPT_OPSETS[0]} to "
                         f"{TORCHSCRIPT_OPSETS[-1]}") from None
    return converted


def _merge(first: "onnx.ModelProto", second: "onnx.ModelProto", io_map: list,
           outputs: list[str], what: str) -> "onnx.ModelProto":
    import onnx
    from onnx import compose

    ir_version = max(first.ir_version, second.ir_version)
    first.ir_version = second.ir_version = ir_version
    try:
        merged = compose.merge_models(first, second, io_map=io_map, outputs=outputs)
    except (ValueError, onnx.checker.ValidationError) as error:
        raise ValueError(f"cannot join {what} with the pipeline: "
                         f"{str(error).splitlines()[0]}") from None
    # merge_models checks that shared domains agree but lists every import of both models.
    versions: dict[str, int] = {}
    for entry in merged.opset_import:
        versions.setdefault("" if entry.domain == "ai.onnx" else entry.domain, entry.version)
    del merged.opset_import[:]
    merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    return merged


def _same_input(model: "onnx.ModelProto", alias: str, name: str) -> None:
    """Feed the graph input ``alias`` from the graph input ``name`` and drop ``alias``
    (``merge_models`` joins outputs to inputs, not one input to two graphs)."""
    for node in model.graph.node:
        node.input[:] = [name if i == alias else i for i in node.input]
    kept = [v for v in model.graph.input if v.name != alias]
    del model.graph.input[:]
    model.graph.input.extend(kept)


def _order_outputs(model: "onnx.ModelProto", names: list[str]) -> None:
    """The graph outputs in the pipeline's order (``merge_models`` lists the first
    graph's before the second's)."""
    import onnx

    by_name = {v.name: v for v in model.graph.output}
    ordered = []
    for name in names:
        value = onnx.ValueInfoProto()
        value.CopyFrom(by_name[name])
        ordered.append(value)
    del model.graph.output[:]
    model.graph.output.extend(ordered)


def _batch_of(example: torch.Tensor) -> torch.Tensor:
    """A batch of at least 2 (the exporter would fix a size of 1)."""
    return example.repeat(2, 1, 1, 1) if example.shape[0] == 1 else example


def compose_pipeline(pipeline: Pipeline, example: torch.Tensor, *, input_name: str = "image",
                     metadata: Optional[dict[str, str]] = None) -> "onnx.ModelProto":
    """The pipeline as one ONNX graph: its stages exported, its ONNX heads joined.

    Args:
        pipeline (Pipeline): built around :class:`OnnxHead` heads (see :func:`onnx_heads`).
        example (Tensor[S, C, H, W], uint8 or float32): example frames (the graph takes
            this dtype; batch, height and width are dynamic).
        input_name (str): the graph input's name.
        metadata (dict of str to str, optional): written to ``metadata_props`` beside
            ``peaklayers.version`` and ``peaklayers.pipeline``.

    Returns:
        onnx.ModelProto: input ``input_name``; outputs ``pipeline.output_names``;
        checked with ``onnx.checker.check_model(full_check=True)``.

    Raises:
        TypeError, ValueError: as :func:`onnx_heads`; the heads do not fit the pipeline
            on ``example``; the heads' opsets cannot be brought to one; the joined graph
            does not check. Messages name the head.
    """
    import onnx
    from onnx import compose

    from .. import __version__

    heads = onnx_heads(pipeline)
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        raise ValueError("example must be a 4-D tensor of frames (samples, channels, height, "
                         "width)")
    stage_opset, opset = _stage_opset(heads), joined_opset(heads)
    models = [compose.add_prefix(_converted(h.model, opset, h.name), f"head{i}/")
              for i, h in enumerate(heads)]
    frames = _batch_of(example)
    batch = {0: "batch", 2: "height", 3: "width"}
    maps_axes = {0: "batch", 2: "map_height", 3: "map_width"}
    names = list(pipeline.output_names)
    pipeline = pipeline.eval()

    def stage(method: str, examples: tuple, inputs: list[str], outputs: list[str],
              axes: dict, number: int) -> "onnx.ModelProto":
        model = _export_stage(pipeline, method, examples, inputs, outputs, axes, stage_opset)
        model = _converted(model, opset, "the " + method + " stage")
        return compose.add_prefix(model, f"stage{number}/", rename_inputs=False,
                                  rename_outputs=False)

    def head_io(index: int) -> tuple[str, list[str]]:
        chosen = [f"head{index}/{n}" for n in heads[index].output_names]
        return f"head{index}/{heads[index].input_name}", chosen

    with torch.no_grad():
        prepared = pipeline.prepare(frames)
        first = stage("prepare", (frames,), [input_name], ["frames"],
                      {input_name: batch, "frames": {0: "batch", 2: "frames_height",
                                                     3: "frames_width"}}, 1)
        head_in, head_out = head_io(0)
        maps = heads[0](prepared)
        joined = _merge(first, models[0], [("frames", head_in)], head_out, heads[0].name)

        if pipeline.kind in ("single_instance", "centroid"):
            method = "find_peaks" if pipeline.kind == "single_instance" else "find_centroids"
            last = stage(method, (maps,), ["maps"], names,
                         {"maps": maps_axes, **{n: {0: "batch"} for n in names}}, 2)
            joined = _merge(joined, last, [(head_out[0], "maps")], names, "the peaks stage")
        else:
            joined = _top_down(pipeline, frames, maps, joined, models[1], heads[1],
                               head_out[0], head_io(1), input_name, stage, names)

    _order_outputs(joined, names)
    props = {"peaklayers.version": __version__,
             "peaklayers.pipeline": f"{type(pipeline).__name__}({pipeline.extra_repr()})"}
    onnx.helper.set_model_props(joined, {**props, **(metadata or {})})
    try:
        onnx.checker.check_model(joined, full_check=True)
    except onnx.checker.ValidationError as error:
        raise ValueError("the joined pipeline graph does not check: "
                         + str(error).splitlines()[0]) from None
    return joined


def _top_down(pipeline, frames, centroid_maps, joined, instance_model, instance_head,
              centroid_out, instance_io, input_name, stage, names):
    """Top-down after the centroid head: crops, the instance head, instance peaks."""
    centroids, cvals, valid, crops, top_left = pipeline.centroids_and_crops(
        frames, centroid_maps)
    slots = {0: "batch"}
    crops_stage = stage(
        "centroids_and_crops", (frames, centroid_maps), ["crops_image", "centroid_maps"],
        ["centroids", "centroid_vals", "instance_valid", "crops", "top_left"],
        {"crops_image": {0: "batch", 2: "height", 3: "width"},
         "centroid_maps": {0: "batch", 2: "map_height", 3: "map_width"},
         "centroids": slots, "centroid_vals": slots, "instance_valid": slots,
         "crops": {0: "crops"}, "top_left": slots}, 2)
    kept = ["centroids", "centroid_vals", "instance_valid", "top_left"]
    joined = _merge(joined, crops_stage, [(centroid_out, "centroid_maps")], kept + ["crops"],
                    "the crops stage")
    _same_input(joined, "crops_image", input_name)

    head_in, head_out = instance_io
    joined = _merge(joined, instance_model, [("crops", head_in)], kept + head_out,
                    instance_head.name)
    outs = instance_head(crops)
    outs = outs if isinstance(outs, tuple) else (outs,)
    map_names = ["instance_maps", "class_vectors"][:len(outs)]
    method = "instance_peaks" if len(outs) == 1 else "instance_peaks_and_classes"
    produced = ["peaks", "peak_vals"] + (["class_probs"] if len(outs) == 2 else [])
    axes = {"instance_maps": {0: "crops", 2: "instance_map_height", 3: "instance_map_width"},
            "class_vectors": {0: "crops"}, "stage_valid": slots, "stage_top_left": slots,
            **{n: slots for n in produced}}
    last = stage(method, (*outs, valid, top_left), [*map_names, "stage_valid", "stage_top_left"],
                 produced, {k: v for k, v in axes.items()
                            if k in map_names or k.startswith("stage_") or k in produced}, 3)
    io_map = [*zip(head_out, map_names, strict=True), ("instance_valid", "stage_valid"),
              ("top_left", "stage_top_left")]
    return _merge(joined, last, io_map, names, "the instance peaks stage")
