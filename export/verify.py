"""Parity of every exported backend with the eager reference, and latency per backend."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .common import ToolError

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


def verify(reference: Backend, backends: dict[str, tuple[Backend, str]], inputs: list[np.ndarray],
           names: list[str]) -> list[Parity]:
    """Run ``reference`` and every backend on every input; compare; time on the first input.

    Raises :class:`ToolError` if a backend fails to run or differs beyond :data:`TOLERANCE`.
    """
    expected = [reference(x) for x in inputs]
    results = [Parity("eager", "CPU (torch)", latency_ms=latency_ms(reference, inputs[0]))]
    for label, (backend, provider) in backends.items():
        parity = Parity(label, provider)
        for x, ref in zip(inputs, expected, strict=True):
            try:
                got = backend(x)
            except Exception as error:
                text = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise ToolError(f"{label} failed on an input of shape {x.shape}: {text}") from None
            compare(ref, got, names, parity, x.shape)
            parity.inputs.append(tuple(x.shape))
        parity.latency_ms = latency_ms(backend, inputs[0])
        if not parity.ok:
            problem = parity.mismatches[0] if parity.mismatches else (
                f"max |difference| {parity.max_abs_diff:.2e} > {TOLERANCE:g}")
            raise ToolError(f"{label} does not match eager: {problem}")
        results.append(parity)
    return results
