"""The steps ``demo`` and ``model`` share: export each format, verify, write metadata and report.

Everything is written to a staging folder beside ``--out`` (and ``--triton``) and moved into
place only when every step has succeeded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import triton
from .common import step, write_json
from .folders import check_apart, check_output, staged_folder
from .formats import FORMATS, Job
from .report import markdown
from .verify import Backend, verify


@dataclass
class TritonOptions:
    root: str | None = None
    max_batch_size: int = 8
    instances: int = 1
    kind: str = "gpu"


def check_outputs(out: Path, triton_options: TritonOptions | None) -> None:
    """Refuse unusable output folders before any work is done."""
    check_output(Path(out))
    if triton_options is not None and triton_options.root is not None:
        root = Path(triton_options.root)
        check_output(root, "--triton")
        check_apart(Path(out), root, ("--out", "--triton"))


def format_writer(job: Job, formats: tuple[str, ...],
                  shown: Path) -> Callable[[Path], dict[str, Path]]:
    """``stage -> {format key: path}``: writes ``job`` in each of ``formats``, one step each
    (logged as files of ``shown``, the final folder)."""
    def write(stage: Path) -> dict[str, Path]:
        files = {}
        for key in formats:
            fmt = FORMATS[key]
            with step(fmt.label, shown) as info:
                info["file"] = fmt.save(job, stage / f"model{fmt.suffix}")
            files[key] = info["file"]
        return files

    return write


def export_verify_write(write: Callable[[Path], dict[str, Path]], reference: Backend,
                        output_names: list[str], metadata: dict, out: Path,
                        inputs: list[np.ndarray], provider: str, title: str, *,
                        extras: Callable[[Path, Path], str | None] | None = None,
                        triton_options: TritonOptions | None = None,
                        notes: list[str] | None = None) -> dict:
    """Write the model files, verify each against ``reference``, write metadata and report.

    Args:
        write: ``stage -> {format key: path}``, e.g. :func:`format_writer`'s.
        reference: the eager backend every written file is compared with.
        extras: ``(stage, out) -> accuracy text`` writing demo-only files.
    """
    summary: dict = {}
    triton_options = triton_options or TritonOptions()
    check_outputs(out, triton_options)
    with staged_folder(out) as stage:
        files = write(stage)

        with step("Verify") as info:
            backends = {}
            for key, path in files.items():
                fmt = FORMATS[key]
                label = "ONNX Runtime" if key == "onnx" else fmt.label
                backends[label] = fmt.load(path, provider)
            parities = verify(reference, backends, inputs, output_names)
            worst = max(p.max_abs_diff for p in parities)
            info["note"] = (f"{len(backends)} backend(s) × {len(inputs)} input shapes, "
                            f"max |Δ| {worst:.1e}; " + ", ".join(
                                f"{p.backend} {p.latency_ms:.1f} ms" for p in parities))
        summary["parity"] = [
            {"backend": p.backend, "provider": p.provider, "max_abs_diff": p.max_abs_diff,
             "mismatches": p.mismatches, "latency_ms": p.latency_ms,
             "inputs": [list(s) for s in p.inputs]}
            for p in parities]
        accuracy_text = extras(stage, out) if extras is not None else None

        meta = dict(metadata, files=sorted(p.name for p in files.values()))
        (stage / "report.md").write_text(
            markdown(title, meta, parities, meta["files"], accuracy_text, notes))
        write_json(stage / "metadata.json", dict(meta, verification=summary))
        if triton_options.root is not None and "onnx" in files:
            root = Path(triton_options.root)
            with staged_folder(root, "--triton") as triton_stage, step("Triton") as info:
                triton.write_repository(
                    triton_stage, "peaklayers", files["onnx"], meta,
                    max_batch_size=triton_options.max_batch_size,
                    instances=triton_options.instances, kind=triton_options.kind)
                write_json(triton_stage / "metadata.json", meta)
                info["note"] = (f"→ {root / 'peaklayers' / 'config.pbtxt'} "
                                "(parsed against Triton's ModelConfig schema)")
    print(f"Done → {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})", flush=True)
    return summary
