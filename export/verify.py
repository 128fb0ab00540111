"""Parity of every exported backend with the eager reference, and latency per backend."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .common import ToolError, first_line
from .near_ties import NearTies, peaks_of, reconcile

# Largest accepted difference of a float output (points are in image pixels).
TOLERANCE = 1e-3

Backend = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class Parity:
    backend: str
    provider: str
    max_abs_diff: float = 0.0  # over finite float outputs
    mismatches: list[str] = field(default_factory=list)  # shape, NaN pattern, int/bool values
    inputs: list[tuple[int, ...]] = field(default_factory=list)
    latency_ms: float = float("nan")
    near_ties: int = 0  # peaks found by one side only, each on a near-tie of the maps

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.max_abs_diff <= TOLERANCE


def compare(reference: list[np.ndarray], got: list[np.ndarray], names: list[str],
            parity: Parity, shape: tuple[int, ...]) -> None:
    """Accumulate the differences between two lists of outputs into ``parity``."""
    if len(got) != len(reference):
        parity.mismatches.append(f"{len(got)} outputs instead of {len(reference)}")
        return
    for name, ref, out in zip(names, reference, got, strict=True):
        where = f"{name} at input {shape}"
        if ref.shape != out.shape:
            parity.mismatches.append(f"{where}: shape {out.shape} instead of {ref.shape}")
            continue
        if ref.dtype.kind == "f":
            ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
            if not np.array_equal(np.isnan(ref64), np.isnan(out64)):
                parity.mismatches.append(f"{where}: NaN in different places")
                continue
            finite = np.isfinite(ref64) & np.isfinite(out64)
            if finite.any():
                diff = float(np.max(np.abs(ref64[finite] - out64[finite])))
                parity.max_abs_diff = max(parity.max_abs_diff, diff)
        elif not np.array_equal(ref, out):
            parity.mismatches.append(f"{where}: values differ")


def latency_ms(backend: Backend, frames: np.ndarray, repeats: int = 10) -> float:
    backend(frames)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend(frames)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _compare_peaks(ref: list[np.ndarray], got: list[np.ndarray], names: list[str],
                   parity: Parity, shape: tuple[int, ...], ties: NearTies, maps) -> None:
    """Exact comparison first; where it fails, the peaks matched as sets, and each peak
    only one side found accepted if it sits on a near-tie of the eager maps."""
    exact = Parity(parity.backend, parity.provider)
    compare(ref, got, names, exact, shape)
    if not exact.mismatches:
        parity.max_abs_diff = max(parity.max_abs_diff, exact.max_abs_diff)
        return
    slots = got[0].shape[2] if ties.slotted and got[0].ndim == 4 else None
    ref_peaks = peaks_of(names, ref, ties.point_axes)
    got_peaks = peaks_of(names, got, ties.point_axes)
    count, problem = reconcile(ref_peaks, got_peaks, maps, ties, TOLERANCE, slots)
    if problem is not None:
        parity.mismatches.append(f"at input {shape}: {problem} ({exact.mismatches[0]})")
        return
    parity.near_ties += count
    for a in ref_peaks:  # the matched peaks' largest difference
        diffs = [max(abs(a[2] - b[2]), abs(a[3] - b[3]), abs(a[4] - b[4]),
                     float(np.max(np.abs(a[5] - b[5]), initial=0.0)))
                 for b in got_peaks if b[:2] == a[:2]]
        if diffs and min(diffs) <= TOLERANCE:
            parity.max_abs_diff = max(parity.max_abs_diff, min(diffs))


def verify(reference: Backend, backends: dict[str, tuple[Backend, str]], inputs: list[np.ndarray],
           names: list[str], ties: NearTies | None = None) -> list[Parity]:
    """Run ``reference`` and every backend on every input; compare; time on the first input.

    With ``ties``, peaks that one side finds and the other does not are accepted (and
    counted in :attr:`Parity.near_ties`) when each sits on a near-tie of the eager head's
    maps; the matched peaks are compared as usual.

    Raises :class:`ToolError` if a backend fails to run or differs beyond :data:`TOLERANCE`.
    """
    expected = [reference(x) for x in inputs]
    tie_maps = [ties.maps(x) for x in inputs] if ties is not None else [None] * len(inputs)
    results = [Parity("eager", "CPU (torch)", latency_ms=latency_ms(reference, inputs[0]))]
    for label, (backend, provider) in backends.items():
        parity = Parity(label, provider)
        for x, ref, maps in zip(inputs, expected, tie_maps, strict=True):
            try:
                got = backend(x)
            except Exception as error:  # the user's head runs here, and it may raise anything
                raise ToolError(f"{label} failed on an input of shape {x.shape}: "
                                f"{first_line(error)}") from None
            if ties is None:
                compare(ref, got, names, parity, x.shape)
            else:
                _compare_peaks(ref, got, names, parity, x.shape, ties, maps)
            parity.inputs.append(tuple(x.shape))
        parity.latency_ms = latency_ms(backend, inputs[0])
        if not parity.ok:
            problem = parity.mismatches[0] if parity.mismatches else (
                f"max |difference| {parity.max_abs_diff:.2e} > {TOLERANCE:g}")
            raise ToolError(f"{label} does not match eager: {problem}")
        results.append(parity)
    return results
