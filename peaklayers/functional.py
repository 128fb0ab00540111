"""Functional API with the reference library's names, signatures and defaults.

A user of sleap-nn's ``peak_finding`` switches by changing the import::

    from peaklayers.functional import find_local_peaks

The peak functions forward to the same implementation as the layers
(:func:`~peaklayers.global_peaks`, :func:`~peaklayers.local_peaks`). Differences
from the reference, all deliberate and specified in SPEC.md: a dropped global peak
has value 0 (not its sub-threshold maximum); tied global maxima give the first
maximum pixel in row-major order; refinement accumulates in float32; an unknown
``refinement`` raises instead of being ignored.

Every function checks its arguments with the same checks as the layers
(:mod:`peaklayers.ops._checks`): a NaN threshold, a bool or string given as a number, a
patch size outside 1..255, a threshold or stride beyond the float32 range, or maps that
are not a tensor fail with a ``ValueError``/``TypeError`` naming the argument.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from .ops._checks import check_confmaps, check_patch_size, check_tensor, python_float
from .ops.global_peaks import global_peaks
from .ops.local_peaks import local_peaks

__all__ = [
    "crop_bboxes",
    "find_global_peaks",
    "find_global_peaks_rough",
    "find_local_peaks",
    "find_local_peaks_rough",
    "integral_regression",
    "make_centered_bboxes",
]


def find_global_peaks_rough(
    cms: torch.Tensor, threshold: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-aligned global peaks. See :func:`peaklayers.global_peaks`.

    Returns ``points (Tensor[S, C, 2], float32)`` and ``vals (Tensor[S, C])``.
    """
    return global_peaks(cms, threshold, None)


def find_global_peaks(
    cms: torch.Tensor,
    threshold: float = 0.2,
    refinement: Optional[str] = None,
    integral_patch_size: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global peaks, optionally refined. See :func:`peaklayers.global_peaks`.

    Returns ``points (Tensor[S, C, 2], float32)`` and ``vals (Tensor[S, C])``.
    """
    check_patch_size(integral_patch_size, "integral_patch_size")
    return global_peaks(cms, threshold, refinement, integral_patch_size)


def find_local_peaks_rough(
    cms: torch.Tensor, threshold: float = 0.2, flat_tops: str = "drop"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grid-aligned local peaks. See :func:`peaklayers.local_peaks`.

    ``flat_tops="merge"`` (not in the reference) keeps flat tops of up to 2x2 pixels.

    Returns ``points (Tensor[N, 2], float32)``, ``vals (Tensor[N])``,
    ``sample_inds (Tensor[N], int32)``, ``channel_inds (Tensor[N], int32)``.
    """
    return local_peaks(cms, threshold, None, flat_tops=flat_tops)


def find_local_peaks(
    cms: torch.Tensor,
    threshold: float = 0.2,
    refinement: Optional[str] = None,
    integral_patch_size: int = 5,
    flat_tops: str = "drop",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local peaks, optionally refined. See :func:`peaklayers.local_peaks`.

    ``flat_tops="merge"`` (not in the reference) keeps flat tops of up to 2x2 pixels.

    Returns ``points (Tensor[N, 2], float32)``, ``vals (Tensor[N])``,
    ``sample_inds (Tensor[N], int32)``, ``channel_inds (Tensor[N], int32)``.
    """
    check_patch_size(integral_patch_size, "integral_patch_size")
    return local_peaks(cms, threshold, refinement, integral_patch_size, flat_tops=flat_tops)


def integral_regression(
    cms: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability-weighted mean of grid coordinates over each map.

    Args:
        cms (Tensor[S, C, h, w]): weights, floating point.
        xv (Tensor[w]): x coordinate of each column.
        yv (Tensor[h]): y coordinate of each row.

    Returns:
        x_hat, y_hat (Tensor[S, C]): ``sum(cms * xv) / sum(cms)`` and likewise for y,
        in the promoted dtype of the inputs. A map summing to 0 gives NaN or inf.
    """
    check_confmaps(cms)
    check_tensor(xv, "xv")
    check_tensor(yv, "yv")
    if xv.dim() != 1 or xv.shape[0] != cms.shape[3]:
        raise ValueError(f"xv must have shape ({cms.shape[3]},), got {tuple(xv.shape)}")
    if yv.dim() != 1 or yv.shape[0] != cms.shape[2]:
        raise ValueError(f"yv must have shape ({cms.shape[2]},), got {tuple(yv.shape)}")
    total = cms.sum(dim=(2, 3))
    x_hat = (cms.sum(dim=2) * xv).sum(dim=2) / total
    y_hat = (cms.sum(dim=3) * yv).sum(dim=2) / total
    return x_hat, y_hat


def make_centered_bboxes(
    centroids: torch.Tensor, box_height: int, box_width: int
) -> torch.Tensor:
    """Boxes of a given size centred on points, corners at pixel centres.

    Args:
        centroids (Tensor[n, 2]): ``(x, y)`` centres.
        box_height, box_width (int): box size in pixels.

    Returns:
        Tensor[n, 4, 2]: corners top-left, top-right, bottom-right, bottom-left, where
        top-left = centroid - (box_width / 2 - 0.5, box_height / 2 - 0.5) and
        bottom-right = centroid + the same.
    """
    check_tensor(centroids, "centroids")
    for name, size in (("box_height", box_height), ("box_width", box_width)):
        if not 0 < python_float(size, name) < float("inf"):
            raise ValueError(f"{name} must be a positive finite number, got {size}")
    if centroids.dim() != 2 or centroids.shape[1] != 2:
        raise ValueError(f"centroids must have shape (n, 2), got {tuple(centroids.shape)}")
    half_w = box_width / 2 - 0.5
    half_h = box_height / 2 - 0.5
    corners = torch.tensor(
        [[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]],
        dtype=centroids.dtype,
        device=centroids.device,
    )
    return centroids[:, None, :] + corners


def crop_bboxes(
    images: torch.Tensor, bboxes: torch.Tensor, sample_inds: torch.Tensor
) -> torch.Tensor:
    """Bilinear crops of boxes, zero outside the images.

    Args:
        images (Tensor[S, C, H, W]): floating point.
        bboxes (Tensor[n, 4, 2]): corners top-left, top-right, bottom-right,
            bottom-left, at pixel centres (see :func:`make_centered_bboxes`). All boxes
            have the size of the first; boxes are parallelograms given by their
            top-left, top-right and bottom-left corners.
        sample_inds (Tensor[n], integer): image of each box, in ``[0, S)`` (negative
            indices are refused, not counted from the end).

    Returns:
        Tensor[n, C, h, w], dtype of ``images``, with
        ``h = round(|y_bottom_left - y_top_left|) + 1`` and ``w`` likewise. With no
        boxes, ``Tensor[0, C, 0, 0]``.
    """
    check_confmaps(images, "images")
    check_tensor(bboxes, "bboxes")
    check_tensor(sample_inds, "sample_inds")
    if bboxes.dim() != 3 or bboxes.shape[1:] != (4, 2):
        raise ValueError(f"bboxes must have shape (n, 4, 2), got {tuple(bboxes.shape)}")
    if sample_inds.shape != bboxes.shape[:1]:
        raise ValueError(
            f"sample_inds must have shape ({bboxes.shape[0]},), got {tuple(sample_inds.shape)}"
        )
    if sample_inds.is_floating_point() or sample_inds.is_complex() or (
        sample_inds.dtype == torch.bool
    ):
        raise TypeError("sample_inds must have an integer dtype, got " + str(sample_inds.dtype))
    if sample_inds.numel() and (sample_inds.min() < 0 or sample_inds.max() >= images.shape[0]):
        raise ValueError(
            f"sample_inds must lie in [0, {images.shape[0]}) (images.shape[0]), got values "
            f"from {int(sample_inds.min())} to {int(sample_inds.max())}"
        )
    n, channels = bboxes.shape[0], images.shape[1]
    if n == 0:
        return images.new_zeros((0, channels, 0, 0))
    height = int(torch.round((bboxes[0, 3, 1] - bboxes[0, 0, 1]).abs())) + 1
    width = int(torch.round((bboxes[0, 1, 0] - bboxes[0, 0, 0]).abs())) + 1

    boxes = bboxes.to(torch.float64)
    top_left = boxes[:, 0, None, None, :]
    right = (boxes[:, 1] - boxes[:, 0])[:, None, None, :]
    down = (boxes[:, 3] - boxes[:, 0])[:, None, None, :]
    u = torch.linspace(0, 1, width, dtype=torch.float64, device=images.device)
    v = torch.linspace(0, 1, height, dtype=torch.float64, device=images.device)
    pixels = top_left + u[None, None, :, None] * right + v[None, :, None, None] * down
    size = torch.tensor(
        [images.shape[3] - 1, images.shape[2] - 1], dtype=torch.float64, device=images.device
    ).clamp(min=1)
    grid = (pixels * (2 / size) - 1).to(torch.float32)
    crops = F.grid_sample(
        images[sample_inds.long()].to(torch.float32),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return crops.to(images.dtype)
