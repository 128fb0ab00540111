"""Peak graph outputs as rows (one per found peak), for JSON/CSV files and the demo checks."""

from __future__ import annotations

import csv
import io
import math

import numpy as np


def peak_rows(outputs: dict[str, np.ndarray], point_axes: list) -> list[dict]:
    """One dict per found peak: sample, channel, slot, x, y, value (and class_probs).

    ``outputs`` maps the graph's output names to arrays; ``point_axes`` are the axes of its
    ``points`` output as the layer describes them (``["batch", "channels", "k", 2]``,
    ``["peaks", 2]``, ...): an axis named ``batch``/``channels``/``k`` gives the sample,
    channel or slot of a peak; without one, ``sample_inds``/``channel_inds`` do. Dropped
    peaks (NaN points) and unused slots (``valid`` False) give no row.
    """
    points, vals = outputs["points"], outputs["vals"]
    valid, probs = outputs.get("valid"), outputs.get("class_probs")
    rows = []
    for index in np.ndindex(*points.shape[:-1]):
        x, y = (float(v) for v in points[index])
        if math.isnan(x) or math.isnan(y) or (valid is not None and not valid[index]):
            continue
        at = dict(zip(point_axes, index, strict=False))
        row = {"sample": int(at["batch"] if "batch" in at else outputs["sample_inds"][index]),
               "channel": int(at["channels"] if "channels" in at
                              else outputs["channel_inds"][index]),
               "slot": int(at.get("k", 0)), "x": x, "y": y, "value": float(vals[index])}
        if probs is not None:
            row["class_probs"] = [float(p) for p in probs[index]]
        rows.append(row)
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
