"""Integral (centre-of-mass) sub-pixel refinement of grid-aligned peaks (SPEC §1.3)."""

import torch
import torch.nn.functional as F

from ._checks import check_confmaps, check_patch_size, check_tensor
from ._windows import pixel_windows


def _window_size(patch_size: int) -> int:
    """Side of the square pixel window that holds every sample of a patch.

    The samples sit at ``g = arange(k) - (k - 1) / 2`` around the peak, so they need
    ``ceil((k - 1) / 2)`` pixels on each side. The window is widened to ``2**m + 1``
    pixels: ``grid_sample`` maps normalised coordinates back to pixels through a
    multiplication by ``(size - 1) / 2``, which is exact only when ``size - 1`` is a
    power of two. With it, odd patches return the pixel values bit for bit and even
    patches use bilinear weights of exactly 1/4.
    """
    half = patch_size // 2
    side = 2
    while side < 2 * half:
        side *= 2
    return side + 1


def _check_indices(map_inds: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> None:
    if not torch.jit.is_scripting():
        check_tensor(map_inds, "map_inds")
        check_tensor(xs, "xs")
        check_tensor(ys, "ys")
    n = map_inds.shape[0] if map_inds.dim() == 1 else -1
    for name, t in (("map_inds", map_inds), ("xs", xs), ("ys", ys)):
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(
                name + " must be 1-D with as many entries as map_inds, got shape "
                + str(t.shape)
            )
        if t.dtype != torch.int64:
            raise TypeError(name + " must have dtype int64, got " + str(t.dtype))


def integral_offsets(
    cms: torch.Tensor,
    map_inds: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    patch_size: int = 5,
) -> torch.Tensor:
    """Centre-of-mass offset of the ``k x k`` patch around each grid-aligned peak.

    The patch samples the peak's own map at ``(x + g_i, y + g_j)`` with
    ``g = arange(k) - (k - 1) / 2``, bilinearly, 0 outside the map (``grid_sample``,
    ``align_corners=True``, zero padding). The offset is ``sum(p * g) / sum(p)`` along
    each axis, accumulated in float32 whatever the map dtype (the reference used the
    map dtype; float32 is a deliberate accuracy improvement). A patch summing to 0
    gives a non-finite offset, as in the reference; nothing raises inside a graph.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, float16/bfloat16/float32/float64.
        map_inds (Tensor[N], int64): ``sample * C + channel`` of each peak.
        xs (Tensor[N], int64): column of each peak.
        ys (Tensor[N], int64): row of each peak.
        patch_size (int): ``k >= 1``; even sizes sample between pixels.

    Returns:
        Tensor[N, 2], float32: ``(dx, dy)`` to add to the peak's ``(x, y)``.
    """
    check_confmaps(cms)
    _check_indices(map_inds, xs, ys)
    check_patch_size(patch_size)
    size = _window_size(patch_size)
    # Only the pixels the samples touch are gathered; the rest of the window is zero.
    # A pixel beyond them still meets ``grid_sample`` with weight 0 (a sample on a pixel
    # centre reads its right and lower neighbours too), and 0 * inf is NaN, so a
    # non-finite pixel just outside the patch must never be in the window (SPEC §4).
    half = patch_size // 2
    steps = torch.arange(2 * half + 1, device=cms.device) - half
    windows = pixel_windows(cms, map_inds, xs, ys, steps, steps, 0.0).float()
    margin = size // 2 - half
    if margin > 0:
        windows = F.pad(windows, [margin, margin, margin, margin])
    windows = windows.unsqueeze(1)

    # Sample positions in window pixels, then in grid_sample's [-1, 1] coordinates
    # (exact: size - 1 is a power of two).
    offsets = torch.arange(patch_size, dtype=torch.float32, device=cms.device) - (
        patch_size - 1
    ) / 2.0
    grid_1d = (offsets + size // 2) * (2.0 / (size - 1)) - 1.0
    grid = torch.stack(
        [
            grid_1d[None, :].expand(patch_size, patch_size),
            grid_1d[:, None].expand(patch_size, patch_size),
        ],
        dim=-1,
    )
    grid = grid.unsqueeze(0).expand(windows.shape[0], patch_size, patch_size, 2)
    # ``[:, 0]``, not ``squeeze(1)``, which exports as an ``If`` node (see global_peaks).
    patches = F.grid_sample(
        windows, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[:, 0]  # (N, k, k)

    total = patches.sum(dim=(1, 2))
    dx = (patches.sum(dim=1) * offsets).sum(dim=1) / total
    dy = (patches.sum(dim=2) * offsets).sum(dim=1) / total
    return torch.stack([dx, dy], dim=1)
