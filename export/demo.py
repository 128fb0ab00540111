"""``python -m export demo``: the embedded example, end to end, with no user files.

The designed network of :mod:`export.demo_net` plus the chosen peak layer is exported to
TorchScript and ONNX, verified against eager PyTorch on synthetic frames of several
sizes, checked against the frames' known keypoints, and drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import demo_net
from .common import step, write_json
from .formats import Job, effective_opset, torch_backend
from .graphs import compose
from .peaks_io import peak_rows
from .png import PART_COLOURS, draw_circle, draw_cross, write_png
from .report import metadata
from .run import instances
from .settings import LayerSettings
from .steps import TritonOptions, check_outputs, export_verify_write, format_writer

INPUT_NAME = "images"
# (batch, height, width) of the verification inputs; the first is also the export example.
SIZES = [(2, 96, 128), (1, 72, 96), (3, 120, 88)]
PICTURE_SCALE = 4


def _point_axes(settings: LayerSettings) -> list:
    return list(settings.outputs()[0].axes)


def accuracy(settings: LayerSettings, outputs: dict, keypoints: np.ndarray) -> dict:
    """Match each true keypoint to the nearest found peak of its part (within 4 px)."""
    rows = peak_rows(outputs, _point_axes(settings))
    errors, missed = [], 0
    for s, animal, part in np.ndindex(*keypoints.shape[:3]):
        found = [(r["x"], r["y"]) for r in rows if r["sample"] == s and r["channel"] == part]
        dists = [np.hypot(x - keypoints[s, animal, part, 0], y - keypoints[s, animal, part, 1])
                 for x, y in found]
        if dists and min(dists) <= 4.0:
            errors.append(min(dists))
        else:
            missed += 1
    total = int(np.prod(keypoints.shape[:3]))
    return {"keypoints": total, "found": total - missed, "peaks": len(rows),
            "mean_error_px": float(np.mean(errors)) if errors else None,
            "max_error_px": float(np.max(errors)) if errors else None}


def identity_accuracy(settings: LayerSettings, outputs: dict, keypoints: np.ndarray,
                      classes: np.ndarray) -> dict:
    """Group peaks into identities on the host; count animals whose class got all its parts."""
    grouped = instances(outputs, keypoints.shape[0], keypoints.shape[2])
    correct = 0
    for s, a in np.ndindex(*classes.shape):
        points = np.array(grouped[s][classes[s, a]]["points"], dtype=np.float64)
        correct += bool(np.all(np.hypot(*(points - keypoints[s, a]).T) <= 4.0))
    return {"animals": int(classes.size), "identities_correct": correct}


def picture(frame: np.ndarray, keypoints: np.ndarray, rows: list[dict]) -> np.ndarray:
    """The frame scaled up, true keypoints as grey circles, found peaks as part-coloured crosses."""
    image = (np.clip(frame.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    image = image.repeat(PICTURE_SCALE, axis=0).repeat(PICTURE_SCALE, axis=1)

    def scaled(v: float) -> float:  # image pixel centre -> picture pixel centre
        return (v + 0.5) * PICTURE_SCALE - 0.5

    for x, y in keypoints.reshape(-1, 2):
        draw_circle(image, scaled(x), scaled(y), (200, 200, 200), radius=2.5 * PICTURE_SCALE)
    for row in rows:
        if row["sample"] == 0:
            colour = PART_COLOURS[row["channel"] % len(PART_COLOURS)]
            draw_cross(image, scaled(row["x"]), scaled(row["y"]), colour, size=2 * PICTURE_SCALE)
    return image


def run(out: str, layer: str = "local", k: int = 8, threshold: float = 0.2,
        refinement: str = "integral", patch_size: int = 5, stride: float | None = None,
        class_maps: bool = False, force: bool = False, provider: str = "auto",
        opset: int | None = None, triton: str | None = None, max_batch_size: int = 8,
        triton_instances: int = 1, triton_kind: str = "gpu", **_: object) -> dict:
    """Export, verify and draw the embedded demo model into ``out`` (see module docstring)."""
    settings = LayerSettings.from_args(layer, k, threshold, refinement, patch_size, stride,
                                       class_maps, force, default_stride=demo_net.STRIDE)
    triton_options = TritonOptions(triton, max_batch_size, triton_instances, triton_kind)
    check_outputs(Path(out), triton_options)
    opset = effective_opset(opset, dynamo=False)
    graph = compose(demo_net.DemoHead().eval(), settings, head_returns_tuple=True, n_outputs=2)
    data = demo_net.frames_batch([(h, w) for _, h, w in SIZES],
                                 batch=max(b for b, _, _ in SIZES))
    inputs = [frames[:b] for (b, _, _), (frames, _, _) in zip(SIZES, data, strict=True)]
    meta = metadata(
        source="demo (designed network in export/demo_net.py, synthetic frames)",
        settings=settings, input_name=INPUT_NAME, input_shape=["batch", 3, "height", "width"],
        input_dtype="float32", channels=len(demo_net.PARTS),
        classes=len(demo_net.CLASSES) if class_maps else None, opset=opset,
        extra={"parts": list(demo_net.PARTS),
               "class_names": list(demo_net.CLASSES) if class_maps else None},
    )
    job = Job(graph, torch.from_numpy(inputs[0]), INPUT_NAME, settings.output_names(), meta,
              opset=opset)
    frames, keypoints, classes = data[0]
    summary: dict = {}

    def extras(stage: Path, shown: Path) -> str:
        outs = dict(zip(job.output_names, torch_backend(graph)(frames), strict=True))
        summary["accuracy"] = acc = accuracy(settings, outs, keypoints)
        if settings.class_maps:
            acc.update(identity_accuracy(settings, outs, keypoints, classes))
        with step("Picture", shown) as info:
            info["file"] = stage / "demo.png"
            write_png(info["file"], picture(frames[0], keypoints[0],
                                            peak_rows(outs, _point_axes(settings))))
            info["note"] = f"{acc['found']}/{acc['keypoints']} keypoints found" + (
                f", mean error {acc['mean_error_px']:.2f} px" if acc["found"] else "")
        write_json(stage / "accuracy.json", acc)
        np.save(stage / "frame.npy", frames[0])  # an input to try `python -m export run` on
        identity = (f" Identity (class maps, grouped on the host with "
                    f"peaklayers.identity.group_instances): {acc['identities_correct']} of "
                    f"{acc['animals']} animals got all their parts under their own class."
                    if settings.class_maps else "")
        one_per_map = not {"peaks", "k"} & set(_point_axes(settings))
        global_note = (" The global layer keeps one peak per part and frame, so it can find at "
                       "most half of the keypoints of two animals." if one_per_map else "")
        errors = (f"; error mean {acc['mean_error_px']:.2f} px, max {acc['max_error_px']:.2f} px "
                  "(image pixels)" if acc["found"] else "")
        return (f"{acc['found']} of {acc['keypoints']} known keypoints found within 4 px "
                f"({acc['peaks']} peaks in all) on {frames.shape[0]} frames of "
                f"{frames.shape[2]}×{frames.shape[3]}{errors}. `demo.png`: sample 0, true "
                "keypoints as grey circles, found peaks as crosses (red head, green thorax, "
                "blue tail)." + global_note + identity)

    result = export_verify_write(
        format_writer(job, ("torchscript", "onnx"), Path(out)), torch_backend(graph),
        job.output_names, job.metadata, Path(out), inputs, provider, "peaklayers export demo",
        extras=extras,
        triton_options=triton_options)
    return dict(result, **summary)
