"""Peaks that differ between two backends only through near-ties of the head's maps.

A head's maps differ in the last bits between backends (another convolution algorithm,
another order of summation). The peak decision is a strict comparison, so a pixel that is
within a few ulps of a neighbour (or of the threshold, or of another channel maximum for
the global layer) can be a peak in one backend and not in the other. Such a difference is
not an export error. :func:`reconcile` matches the two backends' peaks, and accepts every
unmatched peak that sits on such a near-tie in the eager maps; anything else stays a
mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .peaks_io import peak_rows

# Map values closer than this count as tied (float32 maps in [0, 1] differ by ~1e-7
# between backends; a sum over a large convolution reaches ~1e-6).
TIE = 1e-5
# How far a backend's value of a peak may be from the eager map at its pixel.
VALUE_TOLERANCE = 1e-4


@dataclass
class NearTies:
    """What is needed to judge a peak difference: the layer's point axes (as the layer
    describes them), its settings, and the eager head maps.

    ``maps(x)`` returns the eager head's confidence maps ``(S, C, H, W)`` for an input.
    """

    point_axes: list  # e.g. ["batch", "channels", "k", 2] or ["peaks", 2]
    threshold: float
    stride: float
    patch_size: int
    maps: object  # Callable[[np.ndarray], np.ndarray]

    @property
    def one_per_map(self) -> bool:
        """A global layer: a map's peak competes with every other maximum of the map."""
        return not {"peaks", "k"} & set(self.point_axes)

    @property
    def slotted(self) -> bool:
        """Top-K slots: a peak entering one backend's K highest pushes another out."""
        return "k" in self.point_axes


def peaks_of(names: list[str], outputs: list[np.ndarray], point_axes: list) -> list[tuple]:
    """``(sample, channel, x, y, value, class_probs)`` per found peak."""
    return [(r["sample"], r["channel"], r["x"], r["y"], r["value"],
             np.asarray(r.get("class_probs", []), dtype=np.float64))
            for r in peak_rows(dict(zip(names, outputs, strict=True)), point_axes)]


def _close(a: tuple, b: tuple, tolerance: float) -> bool:
    return (abs(a[2] - b[2]) <= tolerance and abs(a[3] - b[3]) <= tolerance
            and abs(a[4] - b[4]) <= tolerance
            and bool(np.all(np.abs(a[5] - b[5]) <= tolerance)))


def _fragile(peak: tuple, maps: np.ndarray, ties: NearTies) -> bool:
    """Whether the eager maps hold a near-tie where ``peak`` (of some backend) sits."""
    s, c, x, y, value = peak[:5]
    channel = maps[s, c].astype(np.float64)
    height, width = channel.shape
    reach = (ties.patch_size - 1) / 2 + 1  # a refined point lies within the patch
    cx, cy = x / ties.stride, y / ties.stride
    padded = np.pad(channel, 1, constant_values=-np.inf)
    top = channel.max()
    near_top = int(np.count_nonzero(channel >= top - TIE))
    for py in range(max(0, int(np.floor(cy - reach))), min(height, int(np.ceil(cy + reach)) + 1)):
        for px in range(max(0, int(np.floor(cx - reach))),
                        min(width, int(np.ceil(cx + reach)) + 1)):
            here = channel[py, px]
            if abs(here - value) > VALUE_TOLERANCE:
                continue
            if abs(here - ties.threshold) <= TIE:
                return True
            if ties.one_per_map:
                if here >= top - TIE and near_top > 1:
                    return True
                continue
            window = padded[py:py + 3, px:px + 3].copy()
            window[1, 1] = -np.inf
            neighbour = window.max()
            if abs(here - neighbour) <= TIE:
                return True
    return False


def reconcile(reference: list[tuple], got: list[tuple], maps: np.ndarray, ties: NearTies,
              tolerance: float, slots: int | None = None) -> tuple[int, str | None]:
    """Match two backends' peaks; ``(near-tie differences, first unexplained difference)``.

    ``slots`` is K for the top-K layer: there a near-tie peak that enters one backend's
    K highest pushes that channel's lowest peak out, which is then explained too.
    """
    unmatched_ref, unmatched_got = [], list(got)
    for peak in reference:
        partner = next((i for i, other in enumerate(unmatched_got)
                        if other[:2] == peak[:2] and _close(peak, other, tolerance)), None)
        if partner is None:
            unmatched_ref.append(peak)
        else:
            unmatched_got.pop(partner)
    sides = {"eager": (unmatched_ref, reference, unmatched_got),
             "exported": (unmatched_got, got, unmatched_ref)}
    fragile = {id(p): _fragile(p, maps, ties) for p in unmatched_ref + unmatched_got}
    for side, (mine, everything, theirs) in sides.items():
        for peak in mine:
            if fragile[id(peak)]:
                continue
            if slots is not None:
                group = [p[4] for p in everything if p[:2] == peak[:2]]
                pushed = len(group) == slots and peak[4] <= min(group) + TIE and any(
                    other[:2] == peak[:2] and fragile[id(other)] and other[4] >= peak[4] - TIE
                    for other in theirs)
                if pushed:
                    continue
            s, c, x, y, value = peak[:5]
            return 0, (f"{side} peak at ({x:.2f}, {y:.2f}) value {value:.6g} in sample {s}, "
                       f"channel {c} has no counterpart")
    return len(unmatched_ref) + len(unmatched_got), None
