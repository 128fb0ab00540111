"""The steps ``demo`` and ``model`` share: export each format, verify, write metadata and report.

Everything is written to a staging folder beside ``--out`` (and ``--triton``) and moved into
place only when every step has succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import triton
from .common import staged_folder, step, write_json
from .formats import FORMATS, Job, torch_backend
from .near_ties import TIE, NearTies
from .report import markdown
from .verify import Backend, verify


@dataclass
class TritonOptions:
    root: str | None = None
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "gpu"


def eager_backend(graph: torch.nn.Module) -> Backend:
    """The composed module in eager PyTorch: the reference every export is compared with."""
    return torch_backend(graph)


def export_verify_write(job: Job, out: Path, inputs: list[np.ndarray], provider: str,
                        title: str, *, formats=("torchscript", "onnx"),
                        written: dict[str, Path] | None = None, reference: Backend | None = None,
                        extras: Callable[[Path, Path], str | None] | None = None,
                        triton_options: TritonOptions | None = None,
                        notes: list[str] | None = None, ties: NearTies | None = None) -> dict:
    """Export ``formats`` (plus files ``written(stage)`` made by the caller), verify, write.

    Args:
        written: callable ``stage -> {format key: path}`` for files the caller makes itself
            (the ONNX graph appended to a user's ONNX model).
        reference: the eager backend (default: ``job.graph`` in PyTorch).
        extras: ``(stage, out) -> accuracy text`` writing demo-only files.
        ties: accept peaks that differ only through near-ties of the head's maps (a
            user's head), counted in the report.
    """
    files: dict[str, Path] = {}
    summary: dict = {}
    triton_options = triton_options or TritonOptions()
    with staged_folder(out) as stage:
        for key in formats:
            fmt = FORMATS[key]
            with step(fmt.label, out) as info:
                info["file"] = fmt.save(job, stage / f"model{fmt.suffix}")
            files[key] = info["file"]
        if written is not None:
            files.update(written(stage))

        with step("Verify") as info:
            backends = {}
            for key, path in files.items():
                fmt = FORMATS[key]
                label = "ONNX Runtime" if key == "onnx" else fmt.label
                backends[label] = fmt.load(path, provider)
            parities = verify(reference or eager_backend(job.graph), backends, inputs,
                              job.output_names, ties)
            worst = max(p.max_abs_diff for p in parities)
            info["note"] = (f"{len(backends)} backend(s) × {len(inputs)} input shapes, "
                            f"max |Δ| {worst:.1e}; " + ", ".join(
                                f"{p.backend} {p.latency_ms:.1f} ms" for p in parities))
        summary["parity"] = [
            {"backend": p.backend, "provider": p.provider, "max_abs_diff": p.max_abs_diff,
             "mismatches": p.mismatches, "near_ties": p.near_ties, "latency_ms": p.latency_ms,
             "inputs": [list(s) for s in p.inputs]}
            for p in parities]
        accuracy_text = extras(stage, out) if extras is not None else None
        tied = [p for p in parities if p.near_ties]
        if tied:
            notes = [*(notes or []), "Near-ties: " + "; ".join(
                f"{p.backend}: {p.near_ties} peak(s) found by only one of it and eager, "
                "each on a pixel of the head's maps within "
                f"{TIE:g} of a neighbour, the threshold or the maximum (the maps differ in "
                "the last bits between backends); all other peaks match" for p in tied)]

        meta = dict(job.metadata, files=sorted(p.name for p in files.values()))
        (stage / "report.md").write_text(
            markdown(title, meta, parities, meta["files"], accuracy_text, notes))
        write_json(stage / "metadata.json", dict(meta, verification=summary))
        if triton_options.root is not None and "onnx" in files:
            root = Path(triton_options.root)
            with staged_folder(root) as triton_stage, step("Triton") as info:
                triton.write_repository(
                    triton_stage, "peaklayers", files["onnx"], meta,
                    max_batch_size=triton_options.max_batch_size,
                    instances=triton_options.instances, kind=triton_options.kind)
                write_json(triton_stage / "metadata.json", meta)
                info["note"] = (f"→ {root / 'peaklayers' / 'config.pbtxt'} "
                                "(parsed against Triton's ModelConfig schema)")
    print(f"Done → {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})", flush=True)
    return summary
