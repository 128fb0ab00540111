"""Pipeline graph outputs as instances: per frame, per instance (slot), per body part.

A graph is recognised by its output names alone, the pipelines' own
(:attr:`peaklayers.ops.pipelines.Pipeline.output_names`) or the sleap-nn format's
(:data:`peaklayers.exporting.sleap_nn.SLEAP_NN_OUTPUTS`). Only valid slots become
instances; a single-instance frame has one instance when any body part was found. For a
multi-class top-down graph the valid slots of each frame are assigned to classes on the
host (:func:`peaklayers.serving.pipelines.assign_instance_classes`, SPEC §3.2). For a
multi-class bottom-up graph the peaks of each frame are grouped on the host
(:func:`peaklayers.serving.pipelines.assign_peak_classes`, SPEC §3.1): instance k is class
k, present when any of its body parts was kept; each body part has its own class
probability, and the instance's ``class_prob`` is their mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from peaklayers import (
    CentroidPipeline,
    MultiClassBottomUpPipeline,
    MultiClassTopDownPipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)
from peaklayers.exporting.sleap_nn import SLEAP_NN_OUTPUTS
from peaklayers.serving.pipelines import assign_instance_classes, assign_peak_classes

# The tool's pipeline words (as in ``python -m export pipeline KIND``) for each pipeline.
_KINDS = {SingleInstancePipeline: "single-instance", CentroidPipeline: "centroid",
          TopDownPipeline: "top-down", MultiClassTopDownPipeline: "multiclass-top-down",
          MultiClassBottomUpPipeline: "multiclass-bottom-up"}


def pipeline_layout(output_names: Sequence[str]) -> tuple[str, str] | None:
    """``(kind, format)`` of a graph with these outputs (format ``peaklayers`` or
    ``sleap-nn``), or None when they are not a pipeline's."""
    names = tuple(output_names)
    for cls, kind in _KINDS.items():
        if names == tuple(cls.output_names):
            return kind, "peaklayers"
        if cls in SLEAP_NN_OUTPUTS and names == SLEAP_NN_OUTPUTS[cls][1]:
            return kind, "sleap-nn"
    return None


def instance_arrays(outputs: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray | None]:
    """One batch of outputs in one form: ``centroids (S, I, 2)``, ``centroid_vals (S, I)``
    (None without centroids), ``peaks (S, I, N, 2)``, ``peak_vals (S, I, N)`` (None for a
    centroid graph), ``valid (S, I)`` bool, and for multi-class graphs ``class_inds (S, I)``
    int64 (-1: unassigned) and ``class_scores (S, I)``; for multi-class bottom-up also
    ``node_class_probs (S, I, N)`` (the instances are the classes, ``I = K``).

    Raises ValueError for class probabilities the assignment refuses (non-finite ones)."""
    arrays: dict[str, np.ndarray | None] = dict.fromkeys(
        ("centroids", "centroid_vals", "peaks", "peak_vals", "class_inds", "class_scores",
         "node_class_probs"))
    if kind == "multiclass-bottom-up":
        points, point_vals, probs = assign_peak_classes(
            outputs["peaks"], outputs["peak_vals"], outputs["peak_valid"].astype(bool),
            outputs["class_probs"])
        kept = np.isfinite(points).all(axis=-1)
        arrays["peaks"], arrays["peak_vals"], arrays["node_class_probs"] = points, point_vals, probs
        arrays["valid"] = kept.any(axis=-1)
        arrays["class_inds"] = np.broadcast_to(np.arange(points.shape[1]), kept.shape[:2])
        with np.errstate(invalid="ignore", divide="ignore"):
            arrays["class_scores"] = np.where(kept, probs, 0).sum(-1) / kept.sum(-1)
        return arrays
    if kind == "single-instance":
        arrays["peaks"] = outputs["peaks"][:, None]
        arrays["peak_vals"] = outputs["peak_vals"][:, None]
        found = np.isfinite(arrays["peaks"]).all(axis=-1).any(axis=-1)
        arrays["valid"] = found
        return arrays
    arrays["centroids"], arrays["centroid_vals"] = outputs["centroids"], outputs["centroid_vals"]
    arrays["valid"] = outputs["instance_valid"].astype(bool)
    if kind != "centroid":
        arrays["peaks"], arrays["peak_vals"] = outputs["peaks"], outputs["peak_vals"]
    probs = outputs.get("class_probs", outputs.get("class_logits"))
    if probs is not None:
        arrays["class_inds"], arrays["class_scores"] = assign_instance_classes(
            probs, arrays["valid"])
    return arrays


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _node_name(names: Sequence[str], n: int) -> str:
    return names[n] if n < len(names) else f"ch{n}"


def _instance(arrays: dict, s: int, i: int, node_names: Sequence[str]) -> dict:
    """One valid slot as a dict; non-finite numbers are None (JSON null)."""
    entry: dict = {"instance": i}
    if arrays["class_inds"] is not None:
        k = int(arrays["class_inds"][s, i])
        entry["class"] = k if k >= 0 else None
        entry["class_prob"] = _number(arrays["class_scores"][s, i])
    if arrays["centroids"] is not None:
        entry["centroid"] = {"x": _number(arrays["centroids"][s, i, 0]),
                             "y": _number(arrays["centroids"][s, i, 1]),
                             "value": _number(arrays["centroid_vals"][s, i])}
    if arrays["peaks"] is not None:
        entry["nodes"] = [
            {"node": _node_name(node_names, n), "x": _number(x), "y": _number(y),
             "value": _number(arrays["peak_vals"][s, i, n]),
             "valid": bool(math.isfinite(x) and math.isfinite(y))}
            for n, (x, y) in enumerate(arrays["peaks"][s, i].tolist())]
        if arrays["node_class_probs"] is not None:
            for n, node in enumerate(entry["nodes"]):
                node["class_prob"] = _number(arrays["node_class_probs"][s, i, n])
    return entry


def frame_records(batches: list[dict], node_names: Sequence[str]) -> Iterator[dict]:
    """``{"frame": f, "instances": [...]}`` for every frame of the batches, in order."""
    frame = 0
    for arrays in batches:
        for s in range(arrays["valid"].shape[0]):
            slots = np.flatnonzero(arrays["valid"][s])
            yield {"frame": frame,
                   "instances": [_instance(arrays, s, int(i), node_names) for i in slots]}
            frame += 1


def csv_columns(kind: str) -> list[str]:
    """The CSV columns for a pipeline ``kind``: one row per instance and body part (per
    instance for a centroid graph)."""
    columns = ["file", "frame", "instance"]
    if kind.startswith("multiclass"):
        columns += ["class", "class_prob"]
    if kind not in ("single-instance", "multiclass-bottom-up"):
        columns += ["centroid_x", "centroid_y", "centroid_value"]
    if kind != "centroid":
        columns += ["node", "x", "y", "value", "valid"]
    return columns


def csv_rows(file: str, record: dict) -> Iterator[dict]:
    """The rows of one frame record (keys as :func:`csv_columns`)."""
    for inst in record["instances"]:
        row = {"file": file, "frame": record["frame"], "instance": inst["instance"],
               "class": inst.get("class"), "class_prob": inst.get("class_prob")}
        if "centroid" in inst:
            row.update(centroid_x=inst["centroid"]["x"], centroid_y=inst["centroid"]["y"],
                       centroid_value=inst["centroid"]["value"])
        if "nodes" not in inst:
            yield row
            continue
        for node in inst["nodes"]:
            # A bottom-up row's class probability is its body part's own.
            yield dict(row, node=node["node"], x=node["x"], y=node["y"], value=node["value"],
                       valid="true" if node["valid"] else "false",
                       class_prob=node.get("class_prob", row["class_prob"]))

