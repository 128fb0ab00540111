"""Gathering the few pixels around each peak (a helper of the refinement and flat tops)."""

import torch


def pixel_windows(
    cms: torch.Tensor,
    map_inds: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    row_steps: torch.Tensor,
    col_steps: torch.Tensor,
    fill: float,
) -> torch.Tensor:
    """The pixels at ``(y + row_steps[i], x + col_steps[j])`` around each peak.

    Gathering costs ``O(N * R * K)``; ``grid_sample`` or slicing on the whole map would
    need a copy of a full map per peak (the reference's cost), because ``grid_sample``
    samples every channel of a batch item.

    Args:
        cms (Tensor[S, C, H, W]): confidence maps, any floating dtype.
        map_inds (Tensor[N], int64): ``sample * C + channel`` of each peak.
        xs, ys (Tensor[N], int64): pixel column and row of each peak.
        row_steps (Tensor[R], int64), col_steps (Tensor[K], int64): offsets to gather.
        fill (float): the value of pixels outside the map.

    Returns:
        Tensor[N, R, K], dtype of ``cms``.
    """
    height, width = cms.shape[2], cms.shape[3]
    rows = ys.unsqueeze(1) + row_steps  # (N, R)
    cols = xs.unsqueeze(1) + col_steps  # (N, K)
    inside = ((rows >= 0) & (rows < height)).unsqueeze(2) & (
        (cols >= 0) & (cols < width)
    ).unsqueeze(1)
    steps = row_steps.unsqueeze(1) * width + col_steps  # (R, K)
    at = (map_inds * height + ys) * width + xs
    flat = at.unsqueeze(1).unsqueeze(2) + steps
    # Pixels outside read index 0, then get ``fill``. ``torch.where``, not ``clamp``:
    # TensorRT's ONNX parser takes ``Clip`` on floating-point tensors only.
    flat = torch.where(inside, flat, torch.zeros_like(flat))
    values = cms.take(flat)
    return torch.where(inside, values, values.new_full((), fill))
