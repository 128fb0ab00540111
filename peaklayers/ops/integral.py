"""Integral (centre-of-mass) sub-pixel refinement of grid-aligned peaks (SPEC §1.3)."""

import torch
import torch.nn.functional as F

from ._checks import check_confmaps, check_patch_size, check_tensor


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
    half = patch_size // 2
    rows, inside = patch_rows(cms, map_inds * cms.shape[2] + ys, ys, half)
    return patch_offsets(patch_pixels(rows, inside, xs, half), patch_size)


def patch_rows(
    cms: torch.Tensor, lines: torch.Tensor, ys: torch.Tensor, half: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``2 * half + 1`` rows around each peak, whole.

    Rows are read with one ``Gather`` of whole rows (``F.embedding`` is exactly that, and
    exports to one ``Gather`` node); a row outside the map reads the peak's own row
    instead and is zeroed by :func:`patch_pixels`.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, any floating dtype.
        lines (Tensor[...], int64): the row of each peak in ``cms.reshape(-1, W)``, i.e.
            ``(sample * C + channel) * H + y``.
        ys (Tensor[...], int64): ``y`` of each peak.
        half (int): rows on each side.

    Returns:
        rows (Tensor[..., R, W], dtype of ``cms``): rows ``y - half .. y + half``.
        inside (Tensor[..., R], bool): which of them are in the map.
    """
    steps = torch.arange(-half, half + 1, device=cms.device)
    near = ys.unsqueeze(-1) + steps
    inside = (near >= 0) & (near < cms.shape[2])
    steps = torch.where(inside, steps, torch.zeros_like(steps))
    rows = F.embedding(lines.unsqueeze(-1) + steps, cms.reshape(-1, cms.shape[3]))
    return rows, inside


def patch_pixels(
    rows: torch.Tensor, inside: torch.Tensor, xs: torch.Tensor, half: int
) -> torch.Tensor:
    """The ``R x R`` pixels around each peak, 0 outside the map, from :func:`patch_rows`.

    Args:
        rows (Tensor[..., R, W]), inside (Tensor[..., R], bool): from :func:`patch_rows`.
        xs (Tensor[...], int64): ``x`` of each peak.
        half (int): as given to :func:`patch_rows`.

    Returns:
        Tensor[..., R, R], dtype of ``rows``.
    """
    size = 2 * half + 1
    # Padded with 0 on both sides, every column of the patch is inside the rows.
    cols = xs.unsqueeze(-1).unsqueeze(-1) + torch.arange(size, device=xs.device).expand(size, size)
    last = rows.dim() - 1
    pixels = F.pad(rows, [half, half]).gather(last, cols)
    return torch.where(inside.unsqueeze(last), pixels, pixels.new_zeros(()))


def patch_offsets(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """:func:`integral_offsets` from the pixels around each peak.

    Args:
        pixels (Tensor[..., R, R]): the pixels at ``(y + j, x + i)`` for ``i, j`` from
            ``-(k // 2)`` to ``k // 2`` (``R = 2 * (k // 2) + 1``), 0 outside the map; any
            floating dtype.
        patch_size (int): ``k >= 1``.

    Returns:
        Tensor[..., 2], float32: ``(dx, dy)``.
    """
    patches = pixels.float()
    if patch_size % 2 == 0:
        quarter = patches * 0.25
        patches = (
            quarter[..., :-1, :-1] + quarter[..., :-1, 1:]
        ) + quarter[..., 1:, :-1] + quarter[..., 1:, 1:]
    # g = arange(k) - (k - 1) / 2, exact: half-integers or integers, step 1
    offsets = torch.arange(
        -(patch_size - 1) / 2.0, patch_size / 2.0, 1.0, dtype=torch.float32, device=pixels.device
    )
    # Column sums weigh x, row sums weigh y; both add up to the patch total. Axes are
    # counted from the front: ONNX Runtime reduces an empty input wrongly over a
    # negative axis.
    last = patches.dim() - 1
    cols = patches.sum(dim=last - 1)  # (..., k)
    moments = torch.stack([cols, patches.sum(dim=last)], dim=last - 1) * offsets
    return moments.sum(dim=last) / cols.sum(dim=last - 1, keepdim=True)
