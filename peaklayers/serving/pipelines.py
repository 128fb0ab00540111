"""Host side of the multi-class top-down pipeline: instances to classes, per frame (§3.2, §5.4)."""

from typing import Union

import numpy as np
import torch

from .identity import _to_numpy, get_class_inds_from_vectors

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
