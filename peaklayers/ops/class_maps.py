"""Class-map lookup for identity models, in the graph (SPEC §3.1, step 1).

A bottom-up identity model predicts, beside its confidence maps, class maps
``(S, K, H, W)``: at every pixel the probability of each of ``K`` identities. Each
peak's class probabilities are the class-map pixel nearest to it:
``class_maps[s, :, round(y), round(x)]``, rounded half to even (``torch.round``, ONNX
``Round``) and clamped into the map. This module puts that lookup into the exported
graph, beside :class:`~peaklayers.LocalPeaks` or :class:`~peaklayers.TopKPeaks`; the
assignment of peaks to classes then runs on the host (:mod:`peaklayers.identity`).

Coordinates: points are ``(x, y)`` in CLASS-MAP pixels. When the peak layer was built
with ``stride`` (its points are in input-image pixels) and the class maps have the
resolution of the confidence maps, give the lookup the same ``stride``: points are
divided by it before rounding. With ``stride=1`` the points are used as they are.

Missing points: a point with a NaN coordinate (an unused top-K slot, a dropped
peak) gets NaN probabilities rather than an error or a made-up pixel, so "no
peak" stays visible downstream. Infinite coordinates are clamped like any other.
"""

from typing import Optional

import torch
from torch import nn

from ._checks import check_stride, check_tensor, python_float


def _check_class_maps(class_maps: torch.Tensor) -> None:
    if not torch.jit.is_scripting():
        check_tensor(class_maps, "class_maps")
    if class_maps.dim() != 4:
        raise ValueError(
            "class_maps must be a 4-D tensor (samples, classes, height, width), got "
            + str(class_maps.dim()) + "-D"
        )
    if not class_maps.is_floating_point():
        raise TypeError(
            "class_maps must have a floating-point dtype, got " + str(class_maps.dtype)
        )
    if class_maps.shape[1] == 0:
        raise ValueError("class_maps must have at least one class, got " + str(class_maps.shape))
    if class_maps.shape[2] == 0 or class_maps.shape[3] == 0:
        raise ValueError(
            "class_maps must have non-zero height and width, got " + str(class_maps.shape)
        )


def _check_points(points: torch.Tensor, rank: int) -> None:
    if not torch.jit.is_scripting():
        check_tensor(points, "points")
    if points.dim() != rank or points.shape[-1] != 2:
        raise ValueError(
            "points must have shape " + ("(N, 2)" if rank == 2 else "(S, C, slots, 2)")
            + ", got " + str(list(points.shape))
        )
    if not points.is_floating_point():
        raise TypeError("points must have a floating-point dtype, got " + str(points.dtype))


def _check_sample_inds(sample_inds: torch.Tensor, points: torch.Tensor) -> None:
    if not torch.jit.is_scripting():
        check_tensor(sample_inds, "sample_inds")
    if sample_inds.dim() != 1 or sample_inds.shape[0] != points.shape[0]:
        raise ValueError(
            "sample_inds must have shape (N,) with N = points.shape[0] = "
            + str(points.shape[0]) + ", got " + str(list(sample_inds.shape))
        )
    if sample_inds.is_floating_point() or sample_inds.dtype == torch.bool:
        raise TypeError("sample_inds must have an integer dtype, got " + str(sample_inds.dtype))


def _check_sample_range(sample_inds: torch.Tensor, samples: int) -> None:
    # Data-dependent (reads the values): eager and scripted code only, never inside a
    # traced or exported graph, where it would either be frozen or refused.
    if sample_inds.numel() > 0:
        low, high = int(sample_inds.min()), int(sample_inds.max())
        if low < 0 or high >= samples:
            raise ValueError(
                "sample_inds must lie in [0, " + str(samples) + ") (class_maps.shape[0]), got "
                + "values from " + str(low) + " to " + str(high)
            )


def _pixel_index(
    points: torch.Tensor, height: int, width: int, stride: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major pixel index ``y * W + x`` of each point, and where the point is missing.

    Args:
        points (Tensor[..., 2], float): ``(x, y)``, divided by ``stride`` first.

    Returns:
        index (Tensor[...], int64): in ``[0, H * W)``; 0 for missing points.
        missing (Tensor[...], bool): a coordinate is NaN.
    """
    points = points.to(torch.float32)
    if stride != 1.0:
        points = points / stride
    # Not ``isnan(points).any(-1)``: ONNX Runtime mis-shapes that reduction with 0 peaks.
    missing = torch.isnan(points[..., 0]) | torch.isnan(points[..., 1])
    # NaN must not reach the integer cast (its result is undefined, in ONNX too).
    points = torch.where(missing.unsqueeze(-1), torch.zeros_like(points), points)
    rounded = torch.round(points)  # half to even, as ONNX Round
    # Clamp in float, before the cast, so huge or infinite coordinates stay in range.
    # The bounds are built from the map sizes as tensors so they stay dynamic in graphs.
    xs = torch.minimum(rounded[..., 0].clamp(min=0.0), _last(width, rounded))
    ys = torch.minimum(rounded[..., 1].clamp(min=0.0), _last(height, rounded))
    index = ys.to(torch.int64) * width + xs.to(torch.int64)
    return index, missing


def _last(size: int, like: torch.Tensor) -> torch.Tensor:
    """``size - 1`` as a 0-d float tensor."""
    return torch.full((), 1.0, dtype=like.dtype, device=like.device) * (size - 1)


def class_probabilities(
    class_maps: torch.Tensor,
    points: torch.Tensor,
    sample_inds: Optional[torch.Tensor] = None,
    stride: float = 1.0,
) -> torch.Tensor:
    """Class probabilities of each peak, read from the class maps (SPEC §3.1).

    The probabilities of a peak at ``(x, y)`` of sample ``s`` are
    ``class_maps[s, :, clamp(round(y / stride), 0, H - 1), clamp(round(x / stride), 0, W - 1)]``
    with rounding half to even. Two forms of peaks are accepted:

    - variable-length peaks of :func:`~peaklayers.local_peaks`: ``points (Tensor[N, 2])``
      with ``sample_inds (Tensor[N], int32 or int64)``; returns ``Tensor[N, K]``.
    - fixed-shape slots of :func:`~peaklayers.topk_peaks`: ``points (Tensor[S, C, slots, 2])``
      and ``sample_inds=None`` (the sample is the leading axis); returns
      ``Tensor[S, C, slots, K]``.

    Args:
        class_maps (Tensor[S, K, H, W]): class probabilities, any floating dtype.
        points (Tensor[N, 2] or Tensor[S, C, slots, 2], float): ``(x, y)`` of each peak;
            class-map pixels times ``stride``. NaN coordinates mark missing peaks.
        sample_inds (Tensor[N], integer, optional): sample of each peak (variable form
            only), in ``[0, S)``.
        stride (float): the points are divided by it before rounding (give the peak
            layer's stride when its points are in input-image pixels).

    Returns:
        Tensor[N, K] or Tensor[S, C, slots, K], dtype of ``class_maps``: NaN rows for
        missing points.
    """
    _check_class_maps(class_maps)
    check_stride(stride)
    samples, classes = class_maps.shape[0], class_maps.shape[1]
    height, width = class_maps.shape[2], class_maps.shape[3]
    # Only the looked-up pixels are read: the maps are never copied or transposed.
    nan = torch.full((), float("nan"), dtype=class_maps.dtype, device=class_maps.device)

    if sample_inds is None:
        _check_points(points, 4)
        if points.shape[0] != samples:
            raise ValueError(
                "points must have S = class_maps.shape[0] = " + str(samples)
                + " samples in the top-K form, got " + str(points.shape[0])
            )
        channels, slots = points.shape[1], points.shape[2]
        index, missing = _pixel_index(points, height, width, stride)
        index = index.reshape(samples, 1, channels * slots).expand(-1, classes, -1)
        probs = class_maps.reshape(samples, classes, height * width).gather(2, index)
        probs = probs.permute(0, 2, 1).reshape(samples, channels, slots, classes)
        return torch.where(missing.unsqueeze(-1), nan, probs)

    _check_points(points, 2)
    _check_sample_inds(sample_inds, points)
    if not torch.jit.is_scripting():
        if not (
            torch.jit.is_tracing()
            or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()
        ):
            _check_sample_range(sample_inds, samples)
    else:
        _check_sample_range(sample_inds, samples)
    index, missing = _pixel_index(points, height, width, stride)
    # Element (sample, class, pixel) of the flat maps, for every class of each peak.
    first = sample_inds.to(torch.int64) * (classes * height * width) + index
    steps = torch.arange(classes, device=class_maps.device) * (height * width)
    probs = class_maps.reshape(-1)[first[:, None] + steps[None, :]]
    return torch.where(missing.unsqueeze(-1), nan, probs)


class ClassMapLookup(nn.Module):
    """Class probabilities of peaks, read from class maps. See :func:`class_probabilities`.

    ``forward(class_maps (Tensor[S, K, H, W]), points (Tensor[N, 2]), sample_inds
    (Tensor[N]))`` returns ``Tensor[N, K]``; ``forward(class_maps, points
    (Tensor[S, C, slots, 2]))`` returns ``Tensor[S, C, slots, K]``. Output dtype is
    that of ``class_maps``; missing (NaN) points give NaN rows.

    Args:
        stride (float): divide points by it before the lookup (the peak layer's stride,
            when the class maps have the resolution of the confidence maps).
    """

    def __init__(self, stride: float = 1.0) -> None:
        super().__init__()
        self.stride = python_float(stride, "stride")
        check_stride(self.stride)

    def forward(
        self,
        class_maps: torch.Tensor,
        points: torch.Tensor,
        sample_inds: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return class_probabilities(class_maps, points, sample_inds, self.stride)

    def extra_repr(self) -> str:
        return f"stride={self.stride:g}"
