"""``python -m export run MODEL.onnx INPUT...``: run an exported graph with ONNX Runtime.

Inputs are ``.npy`` arrays (``(S, C, H, W)`` or ``(C, H, W)``, read without pickle) or PNG
images (8-bit grey/RGB/RGBA/palette, read with Pillow, scaled to [0, 1]; at most
``--max-pixels`` pixels). The session comes from
:func:`peaklayers.runtime.open_session` on the provider asked for; the provider that
actually ran is printed and saved. With a class-map graph (``class_probs`` output) the
peaks are grouped into identities on the host with :func:`peaklayers.identity.group_instances`.
A pipeline graph (``python -m export pipeline``, or the sleap-nn format's ``DIR/model.onnx``
or ``DIR``) is run by :mod:`.pipeline_run`, on frames, images and videos, in batches.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from peaklayers.identity import group_instances
from peaklayers.runtime import RUNTIME_ERRORS

from .common import ToolError, first_line, log
from .formats import METADATA_KEY
from .frames_in import npy_header
from .instances import pipeline_layout
from .peaks_io import peak_rows, rows_to_csv
from .png import MAX_PIXELS, read_png
from .sessions import open_peak_session
from .settings import LAYERS, LayerSettings


def model_props(path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (``{}`` for a graph that cannot be parsed again)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError):
        return {}  # the session already opened it; a graph we cannot parse again has no metadata
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(path: Path, props: dict[str, str] | None = None) -> dict:
    """The tool's metadata embedded in the ONNX file (``{}`` without it)."""
    props = model_props(path) if props is None else props
    if METADATA_KEY in props:
        try:
            return json.loads(props[METADATA_KEY])
        except json.JSONDecodeError:
            pass
    return {}


def described_outputs(meta: dict, output_names: list[str]) -> tuple[str, dict[str, list]]:
    """The peak layer (its ``--layer`` word) and the axes of each output.

    From the tool's metadata when the graph has it; else the graph was exported with the
    library directly, and its output names tell which layer's description it follows.
    """
    if isinstance(meta.get("layer"), dict) and "pipeline" in meta["layer"]:
        raise ToolError(f"{output_names} are not the outputs of a "
                        f"{meta['layer']['pipeline']} pipeline graph")
    if meta.get("layer"):
        outputs = LayerSettings(**meta["layer"]).outputs()
        return meta["layer"]["layer"], {o.name: list(o.axes) for o in outputs}
    by_length = sorted(LAYERS.items(), key=lambda item: -len(item[1].outputs))
    for word, layer in by_length:
        names = [o.name for o in layer.outputs]
        if output_names[:len(names)] == names:
            return word, {o.name: list(o.axes) for o in layer.outputs}
    raise ToolError(f"{output_names} are not the outputs of a peak graph (points, vals, ...)")


def _read_npy(path: Path, max_values: int) -> np.ndarray:
    """A real-valued ``.npy`` array of 3 or 4 dimensions and at most ``max_values`` values.

    The header is checked first: complex, date/time, string, structured and object arrays
    are refused (they have no single real value per pixel), and so is a shape beyond the
    budget, before any data is read.
    """
    with open(path, "rb") as handle:
        shape, dtype = npy_header(path, handle)
        if dtype.fields is not None or dtype.kind not in "biuf":
            kind = {"c": "complex", "M": "date/time", "m": "time-delta", "U": "text",
                    "S": "bytes", "O": "Python object", "V": "structured"}.get(dtype.kind,
                                                                             str(dtype))
            if dtype.fields is not None:
                kind = "structured"
            raise ToolError(f"{path}: {kind} arrays ({dtype}) are not read; the model takes "
                            "real numbers (integer or floating point)")
        if len(shape) not in (3, 4):
            raise ToolError(f"{path}: expected an (S, C, H, W) or (C, H, W) array, got "
                            f"shape {shape}")
        values = math.prod(shape)
        if values > max_values:
            raise ToolError(f"{path}: the array declares shape {shape} = {values:,} values, "
                            f"over the budget of {max_values:,} (3 × --max-pixels raises it)")
        try:
            handle.seek(0)
            return np.load(handle, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ToolError(f"{path}: not a readable .npy array ({first_line(error)})") from None


def load_input(path: Path, dtype: np.dtype, channels: int | None,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A ``(S, C, H, W)`` array of the model's input dtype from a ``.npy`` or PNG file.

    A PNG whose declared height × width exceeds ``max_pixels``, or a ``.npy`` declaring
    more than three times as many values, is refused before its data is read.
    """
    if not path.is_file():
        raise ToolError(f"input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _read_npy(path, 3 * max_pixels)
        if array.ndim == 3:
            array = array[None]
        if array.dtype == np.uint8:
            array = array / 255.0
    elif suffix == ".png":
        image = read_png(path, max_pixels)
        if channels == 3 and image.shape[2] == 1:
            image = image.repeat(3, axis=2)
        array = (image.transpose(2, 0, 1)[None] / 255.0)
    else:
        raise ToolError(f"{path}: unsupported input type {suffix or '(none)'}; use .npy or .png")
    if channels is not None and array.shape[1] != channels:
        raise ToolError(f"{path}: the model takes {channels} channels, the input has "
                        f"{array.shape[1]}")
    return np.ascontiguousarray(array, dtype=dtype)


def _finite_or_none(value):
    """``value`` with every NaN or infinite float replaced by None (JSON null, an empty CSV
    cell): JSON has no such numbers. A missing point is NaN; an infinite peak value comes
    from an infinite map pixel."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def instances(outputs: dict, n_samples: int, n_channels: int) -> list:
    """Host-side identity grouping: per sample, one instance per class."""
    variable_length = "sample_inds" in outputs  # else fixed slots: sizes from the shapes
    points, point_vals, class_probs = group_instances(
        outputs["points"], outputs["vals"], outputs["class_probs"],
        sample_inds=outputs.get("sample_inds"), channel_inds=outputs.get("channel_inds"),
        valid=outputs.get("valid"),
        n_samples=n_samples if variable_length else None,
        n_channels=n_channels if variable_length else None)
    return [[{"class": k, "points": _finite_or_none(points[s, k].tolist()),
              "point_vals": _finite_or_none(point_vals[s, k].tolist()),
              "class_probs": _finite_or_none(class_probs[s, k].tolist())}
             for k in range(points.shape[1])] for s in range(points.shape[0])]


def _csv(result: dict) -> str:
    """Peaks, one per row; for a class-map graph, grouped identities (one row per class and
    part) instead."""
    if any("instances" in e for e in result["files"]):
        rows = [{"file": e["file"], "sample": s, "class": inst["class"], "channel": c,
                 "x": inst["points"][c][0], "y": inst["points"][c][1],
                 "value": inst["point_vals"][c], "class_prob": inst["class_probs"][c]}
                for e in result["files"] for s, sample in enumerate(e["instances"])
                for inst in sample for c in range(len(inst["points"]))]
        return rows_to_csv(rows, ["file", "sample", "class", "channel", "x", "y", "value",
                                  "class_prob"])
    rows = [dict(r, file=e["file"]) for e in result["files"] for r in e["peaks"]]
    return rows_to_csv(rows, ["file", "sample", "channel", "slot", "x", "y", "value"])


def _write_atomically(path: Path, text: str | Iterable[str]) -> None:
    """Write ``text`` (or its pieces, in order) to ``path`` through a file renamed into
    place: a failure or an interruption leaves ``path`` as it was."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines([text] if isinstance(text, str) else text)
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise ToolError(f"cannot write {path}: {error.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _model_file(model: str) -> Path:
    """``model``, or ``model/model.onnx`` for a sleap-nn format directory (SPEC §5.5)."""
    path = Path(model)
    if path.is_dir():
        if not (path / "model.onnx").is_file():
            raise ToolError(f"model folder {path} holds no model.onnx")
        return path / "model.onnx"
    return path


def run(model: str, inputs: list[str], provider: str = "auto", save: str | None = None,
        max_pixels: int = MAX_PIXELS, batch_size: int = 8, **_: object) -> dict:
    """Run ``model`` on every input file; print the peaks (or a pipeline's instances) or
    save them as JSON/CSV."""
    model_path = _model_file(model)
    if max_pixels < 1:
        raise ToolError(f"--max-pixels must be positive, got {max_pixels}")
    if batch_size < 1:
        raise ToolError(f"--batch-size must be at least 1, got {batch_size}")
    if save is not None and Path(save).suffix.lower() not in (".json", ".csv"):
        raise ToolError(f"--save must end in .json or .csv, got {save}")
    if not model_path.is_file():
        raise ToolError(f"model file {model_path} does not exist")
    session = open_peak_session(model_path, provider)
    props = model_props(model_path)
    meta = read_metadata(model_path, props)
    layout = pipeline_layout(session.output_names)
    if layout is not None:
        from .pipeline_run import run_pipeline

        return run_pipeline(session, model_path, layout, meta, props, inputs, save,
                            max_pixels, batch_size)
    kind, axes = described_outputs(meta, session.output_names)
    dtype_name, shape = session.inputs[session.input_name]
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
    note = " (CUDA did not load)" if session.fallback_reason else ""
    log(f"Model ✓ {model_path.name}: {kind} peaks, input {session.input_name!r} {dtype_name}, "
        f"provider {session.provider}{note}")

    result = {"model": str(model_path), "provider": session.provider, "layer": kind,
              "parts": meta.get("parts"), "files": []}
    for name in inputs:
        array = load_input(Path(name), np.dtype(dtype_name), channels, max_pixels)
        try:
            outputs = session.run(array)
        except (ValueError, TypeError) as error:
            raise ToolError(f"{name}: {error}") from None
        except RUNTIME_ERRORS as error:  # ONNX Runtime refused the input
            raise ToolError(f"{name}: ONNX Runtime failed: {first_line(error)}") from None
        rows = peak_rows(outputs, axes["points"])
        entry = {"file": name, "shape": list(array.shape), "peaks": rows}
        if "class_probs" in outputs:
            n_channels = meta.get("channels") or (
                int(outputs["channel_inds"].max(initial=-1)) + 1 if "channel_inds" in outputs
                else int(outputs["points"].shape[1]))
            entry["instances"] = instances(outputs, array.shape[0], n_channels)
        result["files"].append(entry)
        log(f"{name} ✓ {array.shape}: {len(rows)} peaks"
            + (f", grouped into {len(entry['instances'][0])} identities per frame"
               if "instances" in entry else ""))

    if save is None:
        parts = meta.get("parts") or []
        for entry in result["files"]:
            if "instances" in entry:  # grouped identities, one line per frame and class
                for s, sample in enumerate(entry["instances"]):
                    for inst in sample:
                        points = "  ".join(
                            f"{parts[c] if c < len(parts) else f'ch{c}'} "
                            + ("—" if p is None or p[0] is None else f"({p[0]:.2f}, {p[1]:.2f})")
                            for c, p in enumerate(inst["points"]))
                        print(f"{entry['file']}  sample {s}  identity {inst['class']}: {points}")
                continue
            for r in entry["peaks"]:
                part = parts[r["channel"]] if r["channel"] < len(parts) else f"ch{r['channel']}"
                cls = ""
                if "class_probs" in r:
                    cls = f"  class {int(np.argmax(r['class_probs']))}"
                print(f"{entry['file']}  sample {r['sample']}  {part:>8}  x {r['x']:8.2f}  "
                      f"y {r['y']:8.2f}  value {r['value']:.3f}{cls}")
    elif save.lower().endswith(".json"):
        _write_atomically(Path(save), json.dumps(_finite_or_none(result), indent=1,
                                                 allow_nan=False) + "\n")
        log(f"Saved ✓ → {save}")
    else:
        _write_atomically(Path(save), _csv(_finite_or_none(result)))
        log(f"Saved ✓ → {save}")
    return result
