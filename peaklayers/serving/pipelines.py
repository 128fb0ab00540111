"""Host side of the multi-class pipelines: identities per frame.

Multi-class top-down: instances to classes (§3.2, §5.4). Multi-class bottom-up: the peaks
of each part to classes (§3.1 steps 2-4), with the grouping of :mod:`.identity`.
"""

from typing import Union

import numpy as np
import torch

from .identity import _to_numpy, get_class_inds_from_vectors, group_instances

Array = Union[np.ndarray, torch.Tensor]


def assign_instance_classes(
    class_probs: Array, instance_valid: Array
) -> tuple[np.ndarray, np.ndarray]:
    """Assign the valid instances of every frame to classes (SPEC §3.2, per frame).

    Args:
        class_probs (ndarray or Tensor [S, I, K], float): class probabilities of each slot
            (the ``class_probs`` output of a multi-class top-down graph).
        instance_valid (ndarray or Tensor [S, I], bool): which slots hold an instance.

    Returns:
        class_inds (ndarray [S, I], int64): class of each slot, -1 for an unassigned
        instance or an empty slot.
        class_scores (ndarray [S, I], float of ``class_probs``): the probability of that
        class, NaN where ``class_inds`` is -1.
    """
    probs = _to_numpy(class_probs, "class_probs")
    valid = _to_numpy(instance_valid, "instance_valid")
    if probs.ndim != 3:
        raise ValueError("class_probs must have shape (S, I, K), got " + str(probs.shape))
    if valid.dtype != np.bool_ or valid.shape != probs.shape[:2]:
        raise ValueError(
            "instance_valid must be a bool array of shape " + str(probs.shape[:2]) + ", got "
            + str(valid.dtype) + " " + str(valid.shape)
        )
    class_inds = np.full(valid.shape, -1, dtype=np.int64)
    class_scores = np.full(valid.shape, np.nan, dtype=probs.dtype)
    for frame in range(probs.shape[0]):
        slots = np.flatnonzero(valid[frame])
        if slots.size == 0:
            continue
        inds, scores = get_class_inds_from_vectors(probs[frame, slots])
        class_inds[frame, slots] = inds
        class_scores[frame, slots] = scores
    return class_inds, class_scores


def assign_peak_classes(
    peaks: Array, peak_vals: Array, peak_valid: Array, class_probs: Array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group the valid peaks of every frame into one instance per class (SPEC §3.1 steps 2-4).

    The outputs of a :class:`~peaklayers.ops.bottomup_pipeline.MultiClassBottomUpPipeline`
    graph, as ONNX Runtime returns them (numpy) or as tensors. In each (frame, part) the
    valid peaks are assigned to classes maximising the summed probability
    (:func:`~.identity.group_instances`, top-K form: peaks read in slot order); a pair is
    kept only if its class is one of the peak's best.

    Args:
        peaks (ndarray or Tensor [S, N, P, 2], float): frame pixels, NaN in empty slots.
        peak_vals (ndarray or Tensor [S, N, P], float): peak values.
        peak_valid (ndarray or Tensor [S, N, P], bool): which slots hold a peak.
        class_probs (ndarray or Tensor [S, N, P, K], float): class probabilities per slot,
            finite in the valid slots.

    Returns:
        points (ndarray [S, K, N, 2], float32): instance ``k`` of frame ``s`` is class ``k``;
        NaN where no peak was kept.
        point_vals (ndarray [S, K, N], float): the kept peaks' values, NaN elsewhere.
        class_probs (ndarray [S, K, N], float): the matched probability, NaN elsewhere.
    """
    points = _to_numpy(peaks, "peaks")
    valid = _to_numpy(peak_valid, "peak_valid")
    if points.ndim != 4 or points.shape[3] != 2:
        raise ValueError("peaks must have shape (S, N, P, 2), got " + str(points.shape))
    if valid.dtype != np.bool_ or valid.shape != points.shape[:3]:
        raise ValueError(
            "peak_valid must be a bool array of shape " + str(points.shape[:3]) + ", got "
            + str(valid.dtype) + " " + str(valid.shape)
        )
    return group_instances(points, _to_numpy(peak_vals, "peak_vals"),
                           _to_numpy(class_probs, "class_probs"), valid=valid)
