"""A pipeline around ONNX heads as one ONNX graph, joined with ``onnx.compose`` (SPEC §5).

The pipeline's own parts are its stage methods (:meth:`~peaklayers.Pipeline.prepare`,
``find_peaks``, ``find_centroids``, ``centroids_and_crops``, ``instance_peaks``,
``instance_peaks_and_classes``, ``peaks_and_classes``), each exported on its own with the
TorchScript-based exporter (dynamic batch, frame and map sizes), and joined with the heads
in the order ``forward`` calls them::

    single-instance   image → prepare → head → find_peaks
    centroid          image → prepare → head → find_centroids
    top-down          image → prepare → centroid head → centroids_and_crops(image, ·)
                            → instance head (crops) → instance_peaks(·, valid, top_left)
    multi-class       ... → instance head → instance_peaks_and_classes(maps, classes, ...)
    bottom-up         image → prepare → head → peaks_and_classes(maps, class_maps)

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
from .onnx_head import OnnxHead, default_opset_of

if TYPE_CHECKING:
    import onnx

__all__ = ["compose_pipeline", "joined_opset", "onnx_heads"]

_HEADS = {  # pipeline kind → (attribute of the head, role, outputs read)
    "single_instance": (("head", "head", 1),),
    "centroid": (("head", "head", 1),),
    "topdown": (("centroid_head", "centroid head", 1), ("instance_head", "instance head", 1)),
    "multi_class_topdown": (("centroid_head", "centroid head", 1),
                            ("instance_head", "instance head", 2)),
    "multi_class_bottomup": (("head", "head", 2),),
}


def onnx_heads(pipeline: Pipeline) -> list[OnnxHead]:
    """The pipeline's :class:`OnnxHead` heads, in ``forward``'s order, checked for it.

    A head read by the frames (every head but top-down's instance head) needs dynamic
    height and width: frame sizes vary. Each head's selected outputs must be exactly what
    the pipeline reads (one: the maps; the multi-class instance head two: maps and class
    vectors; the multi-class bottom-up head two: maps and class maps), chosen with
    ``OnnxHead(outputs=...)`` and the pipeline's selectors left at their defaults.

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
            second = "class maps" if pipeline.kind == "multi_class_bottomup" else "class vectors"
            raise ValueError(f"{head.name}: the {role} must return exactly the "
                             f"{'maps' if count == 1 else 'maps and the ' + second} "
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


def _converted(model: "onnx.ModelProto", opset: int, what: str) -> "onnx.ModelProto":
    import onnx
    from onnx import version_converter

    if default_opset_of(model) == opset:
        return model
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except Exception as error:  # the converter raises whatever its C++ side threw
        raise ValueError(f"cannot join {what} with the pipeline: converting it to ONNX opset "
                         f"{opset} failed ({str(error).splitlines()[0]}); re-export the "
                         f"head(s) at an opset from {TORCHSCRIPT_OPSETS[0]} to "
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
    model.graph.input.remove(next(v for v in model.graph.input if v.name == alias))


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


class _Join:
    """The graph being built: each part merged onto the previous ones."""

    def __init__(self, pipeline: Pipeline, heads: list[OnnxHead]) -> None:
        self.pipeline, self.heads = pipeline, heads
        self.stage_opset, self.opset = _stage_opset(heads), joined_opset(heads)
        self.model: Optional[onnx.ModelProto] = None
        self.stages = 0

    def _add(self, part: "onnx.ModelProto", io_map: list, keep: list[str], what: str) -> None:
        self.model = part if self.model is None else _merge(self.model, part, io_map, keep,
                                                            what)

    def stage(self, method: str, inputs: dict, outputs: dict, feeds: dict[str, str],
              keep: list[str], graph_input: Optional[str] = None):
        """Export the pipeline's ``method`` and join it.

        Args:
            inputs: ``{stage input: (example, dynamic axes)}``, in the method's order.
            outputs: ``{stage output: dynamic axes}``, in the method's order.
            feeds: ``{stage input: graph tensor}`` joined to it; ``graph_input`` (the
                graph's own input) is joined by name.
            keep: the graph outputs after the join.

        Returns:
            the method's eager outputs on the examples (examples of the next part).
        """
        from onnx import compose

        self.stages += 1
        examples = tuple(example for example, _ in inputs.values())
        axes = {**{name: axis for name, (_, axis) in inputs.items()}, **outputs}
        what = f"the {method} stage"
        model = _export_stage(self.pipeline, method, examples, list(inputs), list(outputs),
                              axes, self.stage_opset)
        model = compose.add_prefix(_converted(model, self.opset, what), f"stage{self.stages}/",
                                   rename_inputs=False, rename_outputs=False)
        self._add(model, [(tensor, name) for name, tensor in feeds.items()
                          if tensor != graph_input], keep, what)
        for name, tensor in feeds.items():
            if tensor == graph_input:
                _same_input(self.model, name, tensor)
        return getattr(self.pipeline, method)(*examples)

    def head(self, index: int, feed: str, example: torch.Tensor, keep: list[str]
             ) -> tuple[tuple[torch.Tensor, ...], list[str]]:
        """Join head ``index`` to the graph tensor ``feed``: its eager outputs on
        ``example`` and the names of its selected outputs in the graph."""
        from onnx import compose

        head = self.heads[index]
        prefix = f"head{index}/"
        model = compose.add_prefix(_converted(head.model, self.opset, head.name), prefix)
        outs = [prefix + name for name in head.output_names]
        self._add(model, [(feed, prefix + head.input_name)], keep + outs, head.name)
        result = head(example)
        return (result if isinstance(result, tuple) else (result,)), outs


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

    from .. import __version__

    heads = onnx_heads(pipeline)
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        raise ValueError("example must be a 4-D tensor of frames (samples, channels, height, "
                         "width)")
    pipeline = pipeline.eval()
    frames = _batch_of(example)
    names = list(pipeline.output_names)
    join = _Join(pipeline, heads)
    slots = {0: "batch"}
    image = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        prepared = join.stage("prepare", {input_name: (frames, image)},
                              {"frames": {0: "batch", 2: "frames_height", 3: "frames_width"}},
                              {}, ["frames"])
        outs, out_names = join.head(0, "frames", prepared, [])
        maps_in = (outs[0], {0: "batch", 2: "map_height", 3: "map_width"})
        maps_name = out_names[0]
        if pipeline.kind in ("single_instance", "centroid"):
            method = "find_peaks" if pipeline.kind == "single_instance" else "find_centroids"
            join.stage(method, {"maps": maps_in}, dict.fromkeys(names, slots),
                       {"maps": maps_name}, names)
        elif pipeline.kind == "multi_class_bottomup":
            class_in = (outs[1], {0: "batch", 2: "class_map_height", 3: "class_map_width"})
            join.stage("peaks_and_classes", {"maps": maps_in, "class_maps": class_in},
                       dict.fromkeys(names, slots),
                       {"maps": maps_name, "class_maps": out_names[1]}, names)
        else:
            _join_top_down(join, frames, maps_in, maps_name, input_name, names)

    joined = join.model
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


def _join_top_down(join: _Join, frames: torch.Tensor, maps_in: tuple, maps_name: str,
                   input_name: str, names: list[str]) -> None:
    """Top-down after the centroid head: crops, the instance head, instance peaks."""
    slots = {0: "batch"}
    kept = ["centroids", "centroid_vals", "instance_valid", "top_left"]
    _, _, valid, crops, top_left = join.stage(
        "centroids_and_crops",
        {"crops_image": (frames, {0: "batch", 2: "height", 3: "width"}),
         "centroid_maps": maps_in},
        {"centroids": slots, "centroid_vals": slots, "instance_valid": slots,
         "crops": {0: "crops"}, "top_left": slots},
        {"crops_image": input_name, "centroid_maps": maps_name}, kept + ["crops"],
        graph_input=input_name)
    outs, out_names = join.head(1, "crops", crops, kept)
    inputs = {"instance_maps": (outs[0], {0: "crops", 2: "instance_map_height",
                                          3: "instance_map_width"})}
    produced = {"peaks": slots, "peak_vals": slots}
    if len(outs) == 2:
        inputs["class_vectors"] = (outs[1], {0: "crops"})
        produced["class_probs"] = slots
    feeds = dict(zip(inputs, out_names, strict=True))
    inputs.update(slot_valid=(valid, slots), slot_top_left=(top_left, slots))
    feeds.update(slot_valid="instance_valid", slot_top_left="top_left")
    method = "instance_peaks" if len(outs) == 1 else "instance_peaks_and_classes"
    join.stage(method, inputs, produced, feeds, names)
