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


def rows_to_csv(rows: list[dict], fields: list[str]) -> str:
    """CSV text of ``rows`` with the columns ``fields``; a ``class_probs`` list field becomes
    columns ``class_0``, ``class_1``...; floats are written with 6 decimals."""
    n_classes = max((len(r.get("class_probs") or []) for r in rows), default=0)
    header = [f for f in fields if f != "class_probs"]
    if "class_probs" in fields:
        header += [f"class_{k}" for k in range(n_classes)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells = [row[f] for f in fields if f != "class_probs"]
        if "class_probs" in fields:
            cells += list(row.get("class_probs") or [])
        writer.writerow(["" if v is None else f"{v:.6f}" if isinstance(v, float) else v
                         for v in cells])
    return buffer.getvalue()
