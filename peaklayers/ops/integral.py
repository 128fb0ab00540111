"""Integral (centre-of-mass) sub-pixel refinement of grid-aligned peaks (SPEC §1.3)."""

import functools

import torch
import torch.nn.functional as F

from ._checks import check_confmaps, check_patch_size, check_tensor
from ._graph import in_graph


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
    steps, columns, weights = patch_constants(patch_size, cms.device)
    rows, inside = patch_rows(cms, map_inds * cms.shape[2] + ys, ys, steps)
    pixels = patch_pixels(rows, inside, xs.unsqueeze(1), columns, patch_size // 2)
    return patch_offsets(pixels, weights)


def patch_rows(
    cms: torch.Tensor, lines: torch.Tensor, ys: torch.Tensor, steps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``2 * half + 1`` rows around each peak, whole.

    Rows are read with one ``Gather`` of whole rows (``torch.embedding`` is exactly that, and
    exports to one ``Gather`` node); a row outside the map reads the peak's own row
    instead and is zeroed by :func:`patch_pixels`.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, any floating dtype.
        lines (Tensor[...], int64): the row of each peak in ``cms.reshape(-1, W)``, i.e.
            ``(sample * C + channel) * H + y``.
        ys (Tensor[...], int64): ``y`` of each peak.
        steps (Tensor[R], int64): ``-half .. half``, from :func:`patch_constants`.

    Returns:
        rows (Tensor[..., R, W], dtype of ``cms``): rows ``y - half .. y + half``.
        inside (Tensor[..., R], bool): which of them are in the map.
    """
    near = ys.unsqueeze(-1) + steps
    inside = (near >= 0) & (near < cms.shape[2])
    steps = torch.where(inside, steps, 0)
    rows = torch.embedding(cms.reshape(-1, cms.shape[3]), lines.unsqueeze(-1) + steps)
    return rows, inside


def patch_pixels(
    rows: torch.Tensor, inside: torch.Tensor, xs: torch.Tensor, columns: torch.Tensor, half: int
) -> torch.Tensor:
    """The ``R x R`` pixels around each peak, 0 outside the map, from :func:`patch_rows`.

    Args:
        rows (Tensor[..., R, W]), inside (Tensor[..., R], bool): from :func:`patch_rows`.
        xs (Tensor[..., 1], int64): ``x`` of each peak.
        columns (Tensor[R, R], int64): from :func:`patch_constants`.
        half (int): ``R // 2``.

    Returns:
        Tensor[..., R, R], dtype of ``rows``: element ``[..., half + j, half + i]`` is
        pixel ``(x + i, y + j)``.
    """
    last = rows.dim() - 1
    # Padded with 0 on both sides, every column of the patch is inside the rows.
    cols = xs.unsqueeze(last) + columns
    pixels = F.pad(rows, [half, half]).gather(last, cols)
    return torch.where(inside.unsqueeze(last), pixels, 0.0)


def patch_offsets(pixels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """:func:`integral_offsets` from the pixels around each peak.

    The moments of the ``k x k`` patch are weighted sums of the ``R x R`` pixels (see
    :func:`_moment_weights`), so one product and one sum give all three.

    Args:
        pixels (Tensor[..., R, R]): from :func:`patch_pixels` (``R = 2 * (k // 2) + 1``);
            any floating dtype.
        weights (Tensor[3, R, R], float32): from :func:`patch_constants`.

    Returns:
        Tensor[..., 2], float32: ``(dx, dy)``.
    """
    # Axes are counted from the front: ONNX Runtime reduces an empty input wrongly over
    # a negative axis.
    first = pixels.dim() - 2
    weighted = pixels.float().unsqueeze(first) * weights
    moments = weighted.sum(dim=[first + 1, first + 2])  # (..., 3): x and y moments, total
    return moments.narrow(first, 0, 2) / moments.narrow(first, 2, 1)


def patch_constants(
    patch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The constant tensors of the refinement, made once per size and device in eager
    code (``R = 2 * (k // 2) + 1``).

    Returns:
        steps (Tensor[R], int64): ``-(k // 2) .. k // 2``.
        columns (Tensor[R, R], int64): ``0 .. R - 1`` on every row.
        weights (Tensor[3, R, R], float32): see :func:`_moment_weights`.
    """
    if not torch.jit.is_scripting():
        if not in_graph():
            return _eager_patch_constants(patch_size, device)
    return _patch_constants(patch_size, device)


def _patch_constants(
    patch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    half = patch_size // 2
    size = 2 * half + 1
    steps = torch.arange(-half, half + 1, device=device)
    columns = torch.arange(size, device=device).expand(size, size)
    return steps, columns, _moment_weights(patch_size, device)


def _moment_weights(patch_size: int, device: torch.device) -> torch.Tensor:
    """The weights of the x moment, y moment and total over the ``R x R`` pixels
    (Tensor[3, R, R], float32).

    The patch samples the map at ``x + g_b`` with ``g = arange(k) - (k - 1) / 2``. For
    odd ``k`` the samples are pixels; for even ``k`` each sample is the mean of the 2x2
    pixels around it, so pixel ``t`` of an axis enters samples ``t - 1`` and ``t``. Along
    each axis a pixel's weight is the number of samples it enters (``count``) or the sum
    of their ``g_b`` (``moment``); the common factor 1/4 cancels in the ratio. Every
    weight is an integer or half-integer, exact in float32. Tensor operations, not
    Python loops: scripted code exported to ONNX must hold no loops.
    """
    pixel = torch.arange(2 * (patch_size // 2) + 1, device=device).unsqueeze(1)  # (R, 1)
    sample = torch.arange(patch_size, device=device)  # (k,)
    enters = ((sample <= pixel) & (sample >= pixel - (1 - patch_size % 2))).to(torch.float32)
    count = enters.sum(dim=1)  # (R,)
    moment = (enters * (sample.to(torch.float32) - (patch_size - 1) / 2.0)).sum(dim=1)
    count_j, moment_j = count.unsqueeze(1), moment.unsqueeze(1)
    return torch.stack([count_j * moment, moment_j * count, count_j * count])


# Made outside inference mode: an inference tensor cannot join a later autograd graph.
@functools.lru_cache(maxsize=64)
def _eager_patch_constants(
    patch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.inference_mode(False):
        return _patch_constants(patch_size, device)
