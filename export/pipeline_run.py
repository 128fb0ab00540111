"""``python -m export run`` on a pipeline graph: frames in batches, instances out.

Inputs are read a batch at a time (:mod:`.frames_in`, :mod:`.video`) and run through the
graph with a progress bar per file (tqdm, on stderr, shown only on a terminal); only the
graph's small outputs are kept until the end, then printed or written as JSON (one line
per frame) or CSV (one row per instance and body part) in one atomic write.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from peaklayers.runtime import RUNTIME_ERRORS

from .common import ToolError, first_line, log
from .frames_in import FrameSource, open_frames
from .instances import csv_columns, csv_rows, frame_records, instance_arrays

SLEAP_NN_METADATA = "export_metadata.json"  # beside model.onnx (SPEC §5.5)
SLEAP_NN_PROP = "sleap_nn_metadata"  # the same JSON inside the ONNX metadata_props


def sleap_nn_metadata(model_path: Path, props: dict[str, str]) -> dict:
    """The sleap-nn format's metadata: ``export_metadata.json`` beside the model, else the
    copy embedded in the graph, else ``{}``."""
    side = model_path.with_name(SLEAP_NN_METADATA)
    if side.is_file():
        where, text = str(side), side.read_text(encoding="utf-8")
    elif SLEAP_NN_PROP in props:
        where, text = f"{model_path} ({SLEAP_NN_PROP})", props[SLEAP_NN_PROP]
    else:
        return {}
    try:
        found = json.loads(text)
    except json.JSONDecodeError as error:
        raise ToolError(f"{where}: not valid JSON ({error.msg}, line {error.lineno})") from None
    return found if isinstance(found, dict) else {}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _progress(name: str, total: int | None):
    """A progress bar on stderr, off where stderr is not a terminal (tqdm's own test)."""
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience (the ``tool`` extra brings it)
        return contextlib.nullcontext(_NoBar())
    return tqdm(total=total, desc=Path(name).name, unit="frame", file=sys.stderr,
                disable=None, leave=False)


def _run_source(session, source: FrameSource, kind: str, batch_size: int) -> list[dict]:
    """Every batch of ``source`` through the graph; the instances' arrays per batch."""
    batches = []
    with _progress(source.name, source.count) as bar:
        for frames in source.batches(batch_size):
            try:
                outputs = session.run(frames)
            except (ValueError, TypeError) as error:
                raise ToolError(f"{source.name}: {error}") from None
            except RUNTIME_ERRORS as error:
                raise ToolError(f"{source.name}: ONNX Runtime failed: {first_line(error)}"
                                ) from None
            try:
                batches.append(instance_arrays(outputs, kind))
            except ValueError as error:  # class vectors the assignment cannot use
                raise ToolError(f"{source.name}: {first_line(error)}") from None
            bar.update(len(frames))
    return batches


def _json_chunks(header: dict, files: list[tuple[str, list[dict]]], node_names: list):
    """The JSON document in pieces: the header's keys, then ``files``, one frame a line."""
    head = json.dumps(header, allow_nan=False)
    yield head[:-1] + ', "files": ['
    for f, (name, batches) in enumerate(files):
        yield ("," if f else "") + "\n" + json.dumps({"file": name})[:-1] + ', "frames": ['
        for r, record in enumerate(frame_records(batches, node_names)):
            yield ("," if r else "") + "\n" + json.dumps(record, allow_nan=False)
        yield "\n]}"
    yield "\n]}\n"


def _csv_chunks(kind: str, files: list[tuple[str, list[dict]]], node_names: list):
    import csv
    import io

    columns = csv_columns(kind)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for name, batches in files:
        for record in frame_records(batches, node_names):
            for row in csv_rows(name, record):
                writer.writerow(["" if row[c] is None else f"{row[c]:.6f}"
                                 if isinstance(row[c], float) else row[c] for c in columns])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _print(files: list[tuple[str, list[dict]]], node_names: list) -> None:
    def xy(point: dict) -> str:
        return "—" if point["x"] is None else f"({point['x']:.2f}, {point['y']:.2f})"

    for name, batches in files:
        for record in frame_records(batches, node_names):
            for inst in record["instances"]:
                words = [f"{name}  frame {record['frame']}  instance {inst['instance']}"]
                if "class" in inst:
                    words.append(f"class {inst['class']}")
                if "centroid" in inst:
                    words.append(f"centroid {xy(inst['centroid'])}")
                words += [f"{node['node']} {xy(node)}" for node in inst.get("nodes", [])]
                print("  ".join(words))


def run_pipeline(session, model_path: Path, layout: tuple[str, str], meta: dict,
                 props: dict[str, str], inputs: list[str], save: str | None,
                 max_pixels: int, batch_size: int) -> dict:
    """Run the pipeline graph of ``session`` on every input; print or save the instances."""
    from .run import _write_atomically  # run.py hands pipeline graphs to this module

    kind, form = layout
    if save is not None and not Path(save).absolute().parent.is_dir():
        raise ToolError(f"--save: folder {Path(save).absolute().parent} does not exist")
    sleap_meta = sleap_nn_metadata(model_path, props)
    node_names = list(meta.get("node_names") or sleap_meta.get("node_names") or [])
    dtype_name, shape = session.inputs[session.input_name]
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
    log(f"Model ✓ {model_path.name}: {kind} pipeline ({form} format), input "
        f"{session.input_name!r} {dtype_name}, provider {session.provider}")
    sources = [open_frames(Path(name), np.dtype(dtype_name), channels, max_pixels)
               for name in inputs]

    files, summary = [], []
    for source in sources:
        start = time.perf_counter()
        batches = _run_source(session, source, kind, batch_size)
        seconds = time.perf_counter() - start
        frames = sum(int(b["valid"].shape[0]) for b in batches)
        found = sum(int(b["valid"].sum()) for b in batches)
        files.append((source.name, batches))
        summary.append({"file": source.name, "frames": frames, "instances": found,
                        "seconds": seconds})
        log(f"{source.name} ✓ {frames} frames, {found} instances, "
            f"{1000 * seconds / max(frames, 1):.1f} ms/frame (batches of {batch_size})")

    header = {"model": str(model_path), "provider": session.provider, "pipeline": kind,
              "format": form, "node_names": node_names or None,
              "class_names": meta.get("class_names") or sleap_meta.get("class_names")}
    if save is None:
        _print(files, node_names)
    else:
        chunks = (_json_chunks(header, files, node_names) if save.lower().endswith(".json")
                  else _csv_chunks(kind, files, node_names))
        _write_atomically(Path(save), chunks)
        log(f"Saved ✓ → {save}")
    return dict(header, files=summary)
