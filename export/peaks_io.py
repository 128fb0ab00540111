"""Peak graph outputs as rows (one per found peak), for JSON/CSV files and the demo checks."""

from __future__ import annotations

import csv
import io
import math

import numpy as np


def peak_rows(layer: str, outputs: dict[str, np.ndarray]) -> list[dict]:
    """One dict per found peak: sample, channel, slot, x, y, value (and class_probs).

    ``layer`` is ``"global"``, ``"local"`` or ``"topk"``; ``outputs`` maps the graph's
    output names to arrays. Dropped global peaks and unused top-K slots give no row.
    """
    points, vals = outputs["points"], outputs["vals"]
    probs = outputs.get("class_probs")
    rows = []

    def add(index: tuple, sample: int, channel: int, slot: int) -> None:
        x, y = (float(v) for v in points[index])
        if math.isnan(x) or math.isnan(y):
            return
        row = {"sample": sample, "channel": channel, "slot": slot, "x": x, "y": y,
               "value": float(vals[index])}
        if probs is not None:
            row["class_probs"] = [float(p) for p in probs[index]]
        rows.append(row)

    if layer == "local":
        for i in range(points.shape[0]):
            add((i,), int(outputs["sample_inds"][i]), int(outputs["channel_inds"][i]), 0)
    elif layer == "global":
        for s, c in np.ndindex(*vals.shape):
            add((s, c), s, c, 0)
    else:
        valid = outputs["valid"]
        for s, c, k in np.ndindex(*vals.shape):
            if valid[s, c, k]:
                add((s, c, k), s, c, k)
    return rows


def rows_to_csv(rows: list[dict], extra: dict | None = None) -> str:
    """CSV text; ``class_probs`` become columns ``class_0``, ``class_1``...; ``extra`` prefixed."""
    extra = extra or {}
    n_classes = max((len(r.get("class_probs", [])) for r in rows), default=0)
    fields = [*extra, "sample", "channel", "slot", "x", "y", "value"]
    fields += [f"class_{k}" for k in range(n_classes)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([*extra.values(), row["sample"], row["channel"], row["slot"],
                         f"{row['x']:.4f}", f"{row['y']:.4f}", f"{row['value']:.6f}",
                         *(f"{p:.6f}" for p in row.get("class_probs", []))])
    return buffer.getvalue()
