"""A pipeline written as the reference library exports models (SPEC §5.5).

``sleap-nn export`` writes a directory that ``sleap-nn predict -m DIR`` and third-party
consumers (Bonsai's SLEAP package) load: ``DIR/model.onnx`` with a uint8 ``image`` input
and outputs of fixed names and order, and ``DIR/export_metadata.json`` with a fixed key
set, also embedded in the ONNX ``metadata_props`` as ``sleap_nn_metadata``. Some consumers
read outputs by position and reject unknown JSON keys, so both are kept exact; peaklayers'
own settings go in other ``metadata_props`` keys (``peaklayers.*``).

The key set is the reference's ``ExportMetadata`` (sleap-nn's ``sleap_nn/export/metadata.py``,
read at the newest snapshot available to us, after 0.3.3; it lists the keys of the SPEC).

What is deliberately different from the reference's own export: integral refinement is on
(its exported graphs have none, its eager predictor refines), every size but the model
constants is dynamic (it froze the frame size into its resize and crop grid), and crops are
exact pixels (its ``grid_sample`` crop samples between pixels).
"""

import datetime
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import nn

from ..ops.pipelines import (
    CentroidPipeline,
    MultiClassTopDownPipeline,
    Pipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)

__all__ = [
    "METADATA_KEYS",
    "SLEAP_NN_OUTPUTS",
    "SleapNNOutputs",
    "export_sleap_nn",
    "sleap_nn_outputs",
]

FORMAT_VERSION = "0.3.5"
"""The reference version whose format is written (its ``sleap_nn_version`` key)."""

METADATA_KEYS = (
    "sleap_nn_version", "export_timestamp", "export_format", "model_type", "model_name",
    "checkpoint_path", "backbone", "n_nodes", "n_edges", "node_names", "edge_inds",
    "input_scale", "input_channels", "output_stride", "crop_size", "max_instances",
    "max_peaks_per_node", "max_batch_size", "precision", "peak_threshold", "input_dtype",
    "normalization", "n_classes", "class_names", "anchor_part", "training_config_embedded",
    "training_config_hash",
)
"""The keys of ``export_metadata.json``, exactly."""

# model_type and output names per pipeline class (most derived first).
SLEAP_NN_OUTPUTS = {
    MultiClassTopDownPipeline: (
        "multi_class_topdown_combined",
        ("centroids", "centroid_vals", "peaks", "peak_vals", "class_logits", "instance_valid"),
    ),
    TopDownPipeline: (
        "topdown", ("centroids", "centroid_vals", "peaks", "peak_vals", "instance_valid")
    ),
    CentroidPipeline: ("centroid", ("centroids", "centroid_vals", "instance_valid")),
    SingleInstancePipeline: ("single_instance", ("peaks", "peak_vals")),
}


def _format_of(pipeline: object) -> tuple[str, tuple[str, ...]]:
    for cls, found in SLEAP_NN_OUTPUTS.items():
        if isinstance(pipeline, cls):
            return found
    raise TypeError(
        "pipeline must be a SingleInstancePipeline, CentroidPipeline, TopDownPipeline or "
        "MultiClassTopDownPipeline, got " + type(pipeline).__name__
    )


def _zero_where(empty: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``t`` with 0 where ``empty`` (bool, broadcastable to ``t``: the slot mask ``(S, I)``
    with one trailing ``None`` per axis of ``t`` after the slots).

    Callers widen the mask by explicit indexing: a ``while mask.dim() < t.dim()`` loop
    scripts (TorchScript heads are exported scripted) into an ONNX ``Loop`` whose exit
    condition the TorchScript-based exporter folds to a constant true, so ONNX Runtime
    never leaves it.
    """
    return torch.where(empty, torch.zeros_like(t), t)


class SleapNNOutputs(Pipeline):
    """A pipeline with the reference's outputs: its names and order, float32 points and
    values, bool masks, empty slots zero-filled (not NaN). A body part dropped inside a
    valid slot stays NaN with value 0, as the reference writes it.

    Build one with :func:`sleap_nn_outputs`; ``forward(image (Tensor[S, C, H, W],
    uint8))`` returns the outputs named in :data:`SLEAP_NN_OUTPUTS` for the pipeline.
    """

    __jit_ignored_attributes__ = ["output_names", "model_type"]

    def __init__(self, pipeline: Pipeline) -> None:
        nn.Module.__init__(self)
        self.model_type, self.output_names = _format_of(pipeline)
        self.pipeline = pipeline

    def min_frame_size(self) -> int:
        return self.pipeline.min_frame_size()

    def extra_repr(self) -> str:
        return f"model_type={self.model_type!r}"


# One forward per output signature: TorchScript needs each tuple's length fixed.


class _SingleInstance(SleapNNOutputs):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        peaks, vals = self.pipeline(image)
        return peaks, vals.to(torch.float32)


class _Centroid(SleapNNOutputs):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        centroids, vals, valid = self.pipeline(image)
        empty = ~valid
        return (_zero_where(empty[:, :, None], centroids), _zero_where(empty, vals.float()),
                valid)


class _TopDown(SleapNNOutputs):
    def forward(self, image: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        centroids, vals, peaks, peak_vals, valid = self.pipeline(image)
        empty = ~valid
        return (_zero_where(empty[:, :, None], centroids), _zero_where(empty, vals.float()),
                _zero_where(empty[:, :, None, None], peaks),
                _zero_where(empty[:, :, None], peak_vals.float()), valid)


class _MultiClassTopDown(SleapNNOutputs):
    def forward(self, image: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        centroids, vals, peaks, peak_vals, valid, probs = self.pipeline(image)
        empty = ~valid
        return (_zero_where(empty[:, :, None], centroids), _zero_where(empty, vals.float()),
                _zero_where(empty[:, :, None, None], peaks),
                _zero_where(empty[:, :, None], peak_vals.float()),
                _zero_where(empty[:, :, None], probs), valid)


def sleap_nn_outputs(pipeline: Pipeline) -> SleapNNOutputs:
    """``pipeline`` with the reference's outputs (see :class:`SleapNNOutputs`)."""
    model_type = _format_of(pipeline)[0]
    wrappers = {"single_instance": _SingleInstance, "centroid": _Centroid,
                "topdown": _TopDown, "multi_class_topdown_combined": _MultiClassTopDown}
    return wrappers[model_type](pipeline)


def _number(value: float) -> Union[int, float]:
    return int(value) if float(value).is_integer() else float(value)


def _metadata(wrapper: SleapNNOutputs, example: torch.Tensor, n_nodes: int,
              node_names: Sequence[str], n_classes: Optional[int],
              class_names: Optional[Sequence[str]], model_name: str) -> dict:
    p = wrapper.pipeline
    topdown = isinstance(p, TopDownPipeline)
    if topdown:
        stride = p.instance_stride
        crop: Optional[list[int]] = [p.crop_height, p.crop_width]
        threshold = p.peak_threshold
    else:
        stride, crop, threshold = p.stride, None, p.threshold
    values = {
        "sleap_nn_version": FORMAT_VERSION,
        "export_timestamp": datetime.datetime.now().isoformat(),
        "export_format": "onnx",
        "model_type": wrapper.model_type,
        "model_name": model_name,
        "checkpoint_path": "",
        "backbone": "",
        "n_nodes": n_nodes,
        "n_edges": 0,
        "node_names": list(node_names),
        "edge_inds": [],
        "input_scale": float(p.input_scale),
        "input_channels": int(example.shape[1]),
        "output_stride": _number(stride),
        "crop_size": crop,
        "max_instances": getattr(p, "max_instances", None),
        "max_peaks_per_node": None,
        "max_batch_size": 1,
        "precision": "fp32",
        "peak_threshold": float(threshold),
        "input_dtype": "uint8",
        "normalization": "0_to_1",
        "n_classes": n_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "anchor_part": None,
        "training_config_embedded": False,
        "training_config_hash": "",
    }
    return values


def _names(names: Optional[Sequence[str]], count: int, what: str) -> list[str]:
    if names is None:
        return [f"{what}_{i}" for i in range(count)]
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise TypeError(what + "_names must be a sequence of non-empty str, got " + repr(names))
    if len(names) != count:
        raise ValueError(f"{what}_names must name {count} {what}s, got {len(names)}")
    return list(names)


def export_sleap_nn(
    pipeline: Pipeline,
    example: torch.Tensor,
    directory: Union[str, "os.PathLike[str]"],
    *,
    node_names: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
    model_name: str = "peaklayers",
    opset: Optional[int] = None,
    dynamo: bool = False,
) -> pathlib.Path:
    """Write ``pipeline`` as the reference library's exported-model directory.

    Args:
        pipeline (Pipeline): a single-instance, centroid, top-down or multi-class
            top-down pipeline.
        example (Tensor[S, C, H, W], uint8): example frames (the format's input is uint8).
        directory (str or PathLike): the directory to write; it must not exist or be
            empty. Written all or nothing (built beside it, then renamed).
        node_names, class_names (sequence of str, optional): default ``node_0, ...``,
            ``class_0, ...`` (class names for a multi-class pipeline only).
        model_name (str): the ``model_name`` key.
        opset, dynamo: as :func:`~peaklayers.export_onnx`.

    Returns:
        pathlib.Path: ``directory``, holding ``model.onnx`` and ``export_metadata.json``.
    """
    import onnx

    from .export import export_onnx

    wrapper = sleap_nn_outputs(pipeline).eval()
    if not isinstance(example, torch.Tensor) or example.dtype != torch.uint8:
        raise TypeError("example must be a uint8 tensor (the sleap-nn format takes uint8 "
                        "frames), got " + (str(example.dtype) if isinstance(example, torch.Tensor)
                                           else type(example).__name__))
    directory = pathlib.Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ValueError(f"directory {str(directory)!r} exists and is not an empty directory")
    with torch.no_grad():
        outputs = wrapper(example)
    names = wrapper.output_names
    n_nodes = int(outputs[names.index("peaks")].shape[-2]) if "peaks" in names else 0
    nodes = _names(node_names, n_nodes, "node") if n_nodes else []
    n_classes: Optional[int] = None
    classes: Optional[list[str]] = None
    if "class_logits" in names:
        n_classes = int(outputs[names.index("class_logits")].shape[-1])
        classes = _names(class_names, n_classes, "class")
    elif class_names is not None:
        raise ValueError("class_names is for a multi-class pipeline only")
    metadata = _metadata(wrapper, example, n_nodes, nodes, n_classes, classes, model_name)

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".sleap-nn-", dir=directory.parent))
    try:
        path = staging / "model.onnx"
        export_onnx(wrapper, example, path, opset=opset, dynamo=dynamo, input_name="image",
                    output_names=names,
                    metadata={"peaklayers.pipeline": f"{type(pipeline).__name__}("
                              f"{pipeline.extra_repr()})"})
        text = json.dumps(metadata, indent=2)
        proto = onnx.load(str(path))
        props = {p.key: p.value for p in proto.metadata_props}
        props["sleap_nn_metadata"] = json.dumps(metadata)
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, str(path))
        (staging / "export_metadata.json").write_text(text + "\n")
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
