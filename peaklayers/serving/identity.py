"""Identity on the host: peaks to classes by optimal assignment (SPEC §3).

The graph ends with per-peak class probabilities (:class:`~peaklayers.ClassMapLookup`);
the assignment of peaks to classes is a small combinatorial problem per
``(sample, channel)`` group and runs here, in numpy.

Functions with the reference library's names and signatures (sleap-nn
``sleap_nn.inference.identity``), so its users switch by import:

- :func:`classify_peaks_from_maps`: class-map lookup, grouping and assembly (§3.1).
- :func:`group_class_peaks`: the grouping alone.
- :func:`get_class_inds_from_vectors`: one frame of top-down class vectors (§3.2).

and, for serving, :func:`group_instances`, which takes the outputs of an ONNX Runtime
session (numpy) directly, in the variable-length or the fixed-shape top-K form.
Torch tensors in give torch tensors out (on the device of the input); numpy in gives
numpy out.

Zero classes (``K = 0``) are valid input and give empty results: no pair can be
formed, so every function returns empty index arrays, unassigned instances, or
instance arrays with a class axis of length 0.

Assignment (SPEC §3.1 step 2): in each group, peaks are matched to classes so that
the summed probability is largest, with ``min(n_peaks, K)`` pairs. The batched solver,
its paths and its deterministic tie rule are in :mod:`peaklayers.serving.assignment`.
"""

from typing import Optional, Union

import numpy as np
import torch

from ..ops.class_maps import class_probabilities
from .assignment import _assign_groups

__all__ = [
    "classify_peaks_from_maps",
    "get_class_inds_from_vectors",
    "group_class_peaks",
    "group_instances",
]

Array = Union[np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------


def _to_numpy(value: Array, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            value = value.to(torch.float32)
        return value.cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(name + " must be a numpy array or a torch tensor, got " + type(value).__name__)


def _int_arg(value: object, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(name + " must be an int, got " + type(value).__name__)
    if value < 0:
        raise ValueError(name + " must be non-negative, got " + str(value))
    return int(value)


def _probs_arg(value: Array, name: str, rank: int = 2) -> np.ndarray:
    probs = _to_numpy(value, name)
    if probs.ndim != rank:
        raise ValueError(
            name + " must be a " + str(rank) + "-D array, got shape " + str(probs.shape)
        )
    if not np.issubdtype(probs.dtype, np.floating):
        raise TypeError(name + " must have a floating-point dtype, got " + str(probs.dtype))
    return probs


def _check_finite(probs: np.ndarray, name: str) -> None:
    if not np.isfinite(probs).all():
        bad = np.argwhere(~np.isfinite(probs))[0]
        raise ValueError(
            name + " must be finite (no NaN or inf), found " + str(probs[tuple(bad)])
            + " at index " + str(tuple(int(i) for i in bad))
        )


def _index_arg(value: Array, name: str, length: int, limit: int, limit_name: str) -> np.ndarray:
    inds = _to_numpy(value, name)
    if inds.ndim != 1 or inds.shape[0] != length:
        raise ValueError(
            name + " must have shape (" + str(length) + ",) to match the peaks, got "
            + str(inds.shape)
        )
    if not np.issubdtype(inds.dtype, np.integer):
        raise TypeError(name + " must have an integer dtype, got " + str(inds.dtype))
    inds = inds.astype(np.int64, copy=False)
    if length and (inds.min() < 0 or inds.max() >= limit):
        raise ValueError(
            name + " must lie in [0, " + str(limit) + ") (" + limit_name + "), got values from "
            + str(int(inds.min())) + " to " + str(int(inds.max()))
        )
    return inds


# ---------------------------------------------------------------------------------
# Reference API (SPEC §3.1, §3.2)
# ---------------------------------------------------------------------------------


def _like(value: np.ndarray, reference: Array) -> Array:
    """``value`` as a tensor on ``reference``'s device if that is a tensor."""
    if isinstance(reference, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(value)).to(reference.device)
    return value


def _group_indices(
    probs: np.ndarray, samples: np.ndarray, channels: np.ndarray, n_channels: int, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """(peak_inds, class_inds) of the kept pairs, ordered by (sample, channel, peak)."""
    if probs.shape[1] == 0:  # no classes: min(n_peaks, 0) = 0 pairs in every group
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = samples * n_channels + channels
    assigned, order = _assign_groups(probs, keys, n_groups)
    peak_inds = order[assigned[order] >= 0]  # by (sample, channel, peak)
    class_inds = assigned[peak_inds]
    # SPEC §3.1 step 3: keep a pair only if the class is one of the peak's best.
    matched = probs[peak_inds]
    keep = matched[np.arange(peak_inds.shape[0]), class_inds] == matched.max(axis=1)
    return peak_inds[keep].astype(np.int64), class_inds[keep]


def group_class_peaks(
    peak_class_probs: Array,
    peak_sample_inds: Array,
    peak_channel_inds: Array,
    n_samples: int,
    n_channels: int,
) -> tuple[Array, Array]:
    """Match the peaks of every (sample, channel) group to classes (SPEC §3.1 steps 2-3).

    In each group the peaks are assigned to classes maximising the summed probability
    (``min(n_peaks, K)`` pairs); a pair is kept only if its class is one of the peak's
    highest-probability classes. Ties: see :mod:`peaklayers.serving.assignment`.

    Args:
        peak_class_probs (Tensor or ndarray [N, K], float): class probabilities per peak,
            finite.
        peak_sample_inds (Tensor or ndarray [N], integer): in ``[0, n_samples)``.
        peak_channel_inds (Tensor or ndarray [N], integer): in ``[0, n_channels)``.
        n_samples (int): number of samples.
        n_channels (int): number of channels (body parts).

    Returns:
        peak_inds ([M], int64): index of each kept peak into the inputs.
        class_inds ([M], int64): its class.
        Ordered by (sample, channel, peak index); torch tensors (on the device of
        ``peak_class_probs``) for tensor input, numpy arrays otherwise.
    """
    probs = _probs_arg(peak_class_probs, "peak_class_probs")
    _check_finite(probs, "peak_class_probs")
    n_samples = _int_arg(n_samples, "n_samples")
    n_channels = _int_arg(n_channels, "n_channels")
    length = probs.shape[0]
    samples = _index_arg(peak_sample_inds, "peak_sample_inds", length, n_samples, "n_samples")
    channels = _index_arg(peak_channel_inds, "peak_channel_inds", length, n_channels, "n_channels")
    peak_inds, class_inds = _group_indices(probs, samples, channels, n_channels,
                                           n_samples * n_channels)
    return _like(peak_inds, peak_class_probs), _like(class_inds, peak_class_probs)


def _assemble(
    points: np.ndarray,
    vals: np.ndarray,
    probs: np.ndarray,
    samples: np.ndarray,
    channels: np.ndarray,
    n_samples: int,
    n_channels: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group and write the kept peaks into ``(S, K, C)`` instance arrays."""
    n_classes = probs.shape[1]
    peak_inds, class_inds = _group_indices(
        probs, samples, channels, n_channels, n_samples * n_channels
    )
    out_points = np.full((n_samples, n_classes, n_channels, 2), np.nan, dtype=np.float32)
    out_vals = np.full((n_samples, n_classes, n_channels), np.nan, dtype=vals.dtype)
    out_probs = np.full((n_samples, n_classes, n_channels), np.nan, dtype=probs.dtype)
    where = (samples[peak_inds], class_inds, channels[peak_inds])
    out_points[where] = points[peak_inds]
    out_vals[where] = vals[peak_inds]
    out_probs[where] = probs[peak_inds, class_inds]
    return out_points, out_vals, out_probs


def _float_dtype(value: np.ndarray) -> np.ndarray:
    return value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float32)


def classify_peaks_from_maps(
    class_maps: Array,
    peak_points: Array,
    peak_vals: Array,
    peak_sample_inds: Array,
    peak_channel_inds: Array,
    n_channels: int,
) -> tuple[Array, Array, Array]:
    """Classify local peaks by class maps and group them into instances (SPEC §3.1).

    Looks up each peak's class probabilities (:func:`~peaklayers.class_probabilities`:
    nearest pixel, round half to even, clamped), then :func:`group_class_peaks`.

    Args:
        class_maps (Tensor or ndarray [S, K, H, W], float): class probabilities.
        peak_points (Tensor or ndarray [N, 2], float): ``(x, y)`` in class-map pixels.
        peak_vals (Tensor or ndarray [N], float): confidence of each peak.
        peak_sample_inds (Tensor or ndarray [N], integer): in ``[0, S)``.
        peak_channel_inds (Tensor or ndarray [N], integer): in ``[0, n_channels)``.
        n_channels (int): channels (body parts) per instance.

    Returns:
        points ([S, K, n_channels, 2], float32): instance ``k`` of sample ``s`` is class
            ``k``; NaN where no peak was kept.
        point_vals ([S, K, n_channels], dtype of ``peak_vals``): NaN where no peak.
        class_probs ([S, K, n_channels], dtype of ``class_maps``): the matched
            probability, NaN where no peak.
        Torch tensors on the device of ``class_maps`` if it is a tensor, else numpy.
    """
    maps = class_maps
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(maps)
    elif not isinstance(maps, torch.Tensor):
        raise TypeError(
            "class_maps must be a numpy array or a torch tensor, got " + type(maps).__name__
        )
    if maps.dim() != 4:
        raise ValueError(
            "class_maps must be a 4-D array (samples, classes, height, width), got shape "
            + str(tuple(maps.shape))
        )
    n_channels = _int_arg(n_channels, "n_channels")
    points = _to_numpy(peak_points, "peak_points")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError("peak_points must have shape (N, 2), got " + str(points.shape))
    if np.isnan(points).any():
        raise ValueError("peak_points must not contain NaN (drop missing peaks first)")
    length = points.shape[0]
    vals = _float_dtype(_to_numpy(peak_vals, "peak_vals"))
    if vals.shape != (length,):
        raise ValueError(
            "peak_vals must have shape (" + str(length) + ",) to match peak_points, got "
            + str(vals.shape)
        )
    n_samples = int(maps.shape[0])
    samples = _index_arg(peak_sample_inds, "peak_sample_inds", length, n_samples,
                         "class_maps.shape[0]")
    channels = _index_arg(peak_channel_inds, "peak_channel_inds", length, n_channels,
                          "n_channels")

    if maps.shape[1] == 0:  # no classes, nothing to look up (the graph op refuses K = 0)
        probs = _to_numpy(maps.new_zeros((length, 0)), "class_maps")
    else:
        probs = class_probabilities(
            maps.detach(),
            torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(maps.device),
            torch.from_numpy(samples).to(maps.device),
        )
        probs = _to_numpy(probs, "class_maps")
    _check_finite(probs, "class_maps (at the peaks)")
    result = _assemble(points, vals, probs, samples, channels, n_samples, n_channels)
    if isinstance(class_maps, torch.Tensor):
        result = tuple(_like(r, class_maps) for r in result)
        if class_maps.dtype == torch.bfloat16:
            result = (result[0], result[1], result[2].to(torch.bfloat16))
    return result


def get_class_inds_from_vectors(peak_class_probs: Array) -> tuple[Array, Array]:
    """Assign the ``n`` instances of one frame to classes (SPEC §3.2).

    Maximises the summed probability with ``min(n, K)`` pairs (ties:
    :mod:`peaklayers.serving.assignment`).

    Args:
        peak_class_probs (Tensor or ndarray [n, K], float): class probabilities of each
            instance, finite.

    Returns:
        class_inds ([n], int64): class of each instance, -1 if unassigned.
        class_probs ([n], dtype of the input): its probability, NaN if unassigned.
        Torch tensors (on the input's device) for tensor input, numpy otherwise.
    """
    probs = _probs_arg(peak_class_probs, "peak_class_probs")
    _check_finite(probs, "peak_class_probs")
    n = probs.shape[0]
    class_inds = _assign_groups(probs, np.zeros(n, dtype=np.int64), 1)[0]
    class_probs = np.full(n, np.nan, dtype=probs.dtype)
    taken = class_inds >= 0
    class_probs[taken] = probs[taken, class_inds[taken]]
    if isinstance(peak_class_probs, torch.Tensor):
        out_probs = _like(class_probs, peak_class_probs).to(peak_class_probs.dtype)
        return _like(class_inds, peak_class_probs), out_probs
    return class_inds, class_probs


# ---------------------------------------------------------------------------------
# Serving: group the outputs of an exported graph
# ---------------------------------------------------------------------------------


def group_instances(
    points: Array,
    vals: Array,
    class_probs: Array,
    sample_inds: Optional[Array] = None,
    channel_inds: Optional[Array] = None,
    valid: Optional[Array] = None,
    n_samples: Optional[int] = None,
    n_channels: Optional[int] = None,
) -> tuple[Array, Array, Array]:
    """Per-frame instances from the outputs of a peak + class-map graph, batched over frames.

    Two input forms, told apart by the rank of ``points``:

    - variable-length (:class:`~peaklayers.LocalPeaks` + :class:`~peaklayers.ClassMapLookup`):
      ``points [N, 2]``, ``vals [N]``, ``class_probs [N, K]``, ``sample_inds [N]``,
      ``channel_inds [N]``; ``n_samples`` and ``n_channels`` are required (frames or
      channels without peaks leave no trace in these arrays).
    - fixed-shape top-K (:class:`~peaklayers.TopKPeaks` + lookup): ``points [S, C, k, 2]``,
      ``vals [S, C, k]``, ``class_probs [S, C, k, K]`` and optionally ``valid [S, C, k]``
      (by default a slot is valid when its point is not NaN). Peaks of a group are taken
      in slot order (value descending), which is the order the tie rule reads them in.

    Args:
        points, vals, class_probs, sample_inds, channel_inds, valid: numpy arrays (as
            ONNX Runtime returns them) or torch tensors.
        n_samples (int): frames in the batch (variable-length form).
        n_channels (int): channels per instance (variable-length form).

    Returns:
        points ([S, K, C, 2], float32), point_vals ([S, K, C]), class_probs ([S, K, C]):
        instance ``k`` of frame ``s`` is class ``k``; NaN where no peak was kept.
        Torch tensors on the device of ``points`` if it is a tensor, else numpy.
    """
    pts = _to_numpy(points, "points")
    if pts.ndim == 4:
        if sample_inds is not None or channel_inds is not None:
            raise ValueError(
                "sample_inds and channel_inds are for the variable-length form; the top-K "
                "form (points of shape (S, C, k, 2)) takes its indices from the shape"
            )
        if pts.shape[3] != 2:
            raise ValueError("points must have shape (S, C, k, 2), got " + str(pts.shape))
        samples_, channels_ = pts.shape[0], pts.shape[1]
        probs = _probs_arg(class_probs, "class_probs", rank=4)
        if probs.shape[:3] != pts.shape[:3]:
            raise ValueError(
                "class_probs must have shape (S, C, k, K) = " + str(pts.shape[:3])
                + " + (K,), got " + str(probs.shape)
            )
        vals_ = _float_dtype(_to_numpy(vals, "vals"))
        if vals_.shape != pts.shape[:3]:
            raise ValueError(
                "vals must have shape " + str(pts.shape[:3]) + ", got " + str(vals_.shape)
            )
        if valid is None:
            mask = ~np.isnan(pts).any(axis=3)
        else:
            mask = _to_numpy(valid, "valid")
            if mask.shape != pts.shape[:3]:
                raise ValueError(
                    "valid must have shape " + str(pts.shape[:3]) + ", got " + str(mask.shape)
                )
            mask = mask.astype(bool)
        for name, value in (("n_samples", n_samples), ("n_channels", n_channels)):
            expected = samples_ if name == "n_samples" else channels_
            if value is not None and _int_arg(value, name) != expected:
                raise ValueError(
                    name + " is " + str(value) + " but points has " + str(expected)
                    + " along that axis"
                )
        s, c, _ = np.nonzero(mask)
        flat_probs = probs[mask]
        _check_finite(flat_probs, "class_probs (of valid slots)")
        result = _assemble(
            pts[mask], vals_[mask], flat_probs, s.astype(np.int64), c.astype(np.int64),
            samples_, channels_,
        )
    elif pts.ndim == 2:
        if pts.shape[1] != 2:
            raise ValueError("points must have shape (N, 2), got " + str(pts.shape))
        if n_samples is None or n_channels is None:
            raise ValueError(
                "n_samples and n_channels are required for variable-length peaks "
                "(points of shape (N, 2))"
            )
        if sample_inds is None or channel_inds is None:
            raise ValueError(
                "sample_inds and channel_inds are required for variable-length peaks "
                "(points of shape (N, 2))"
            )
        if valid is not None:
            raise ValueError("valid is for the top-K form (points of shape (S, C, k, 2))")
        n_samples = _int_arg(n_samples, "n_samples")
        n_channels = _int_arg(n_channels, "n_channels")
        length = pts.shape[0]
        probs = _probs_arg(class_probs, "class_probs")
        if probs.shape[0] != length:
            raise ValueError(
                "class_probs must have shape (" + str(length) + ", K) to match points, got "
                + str(probs.shape)
            )
        _check_finite(probs, "class_probs")
        vals_ = _float_dtype(_to_numpy(vals, "vals"))
        if vals_.shape != (length,):
            raise ValueError(
                "vals must have shape (" + str(length) + ",) to match points, got "
                + str(vals_.shape)
            )
        s = _index_arg(sample_inds, "sample_inds", length, n_samples, "n_samples")
        c = _index_arg(channel_inds, "channel_inds", length, n_channels, "n_channels")
        result = _assemble(pts, vals_, probs, s, c, n_samples, n_channels)
    else:
        raise ValueError(
            "points must have shape (N, 2) or (S, C, k, 2), got " + str(pts.shape)
        )
    if isinstance(points, torch.Tensor):
        return tuple(_like(r, points) for r in result)
    return result
