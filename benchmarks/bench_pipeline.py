"""Latency of a whole top-down graph in ONNX Runtime against running its stages apart.

One batch of uint8 frames ``(4, 1, 384, 384)`` with two animals each; the centroid head
sees the frames at ``input_scale`` 0.5 and has output stride 2; the instance head sees
96 x 96 crops and has output stride 2. Both heads are small convolution stacks (random
weights) whose maps also carry a blur of the image, so the peaks are real and the
crops land on the animals.

Three ways to get the same instances, timed side by side in one process:

* ``graph``: the :class:`~peaklayers.TopDownPipeline` exported to ONNX (TorchScript-based
  exporter) and run by one ONNX Runtime CPU session: uint8 frames in, frame points out.
* ``stages``: how top-down inference is written around exported heads today: each head
  is its own ONNX Runtime session, and the glue runs in Python on the host: /255 and
  the antialiased resize in PyTorch, :func:`~peaklayers.functional.find_local_peaks` on
  the centroid maps and the best ``max_instances`` per frame, ``make_centered_bboxes`` +
  ``crop_bboxes`` for the crops, :func:`~peaklayers.functional.find_global_peaks` on the
  instance maps, and the mapping back to frame pixels.
* ``eager``: the same pipeline module in eager PyTorch.

Run from the repository root (the stable-allocator setting of ``benchmarks/README.md``
applies)::

    python benchmarks/bench_pipeline.py [--repeats 30] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from peaklayers import TopDownPipeline, export_onnx
from peaklayers.functional import (
    crop_bboxes,
    find_global_peaks,
    find_local_peaks,
    make_centered_bboxes,
)

FRAMES = (4, 1, 384, 384)
ANIMALS = 2
CROP = 96
INPUT_SCALE = 0.5
STRIDE = 2
PARTS = 5
THRESHOLD = 0.2


class ConvHead(nn.Module):
    """``(S, 1, H, W)`` float → ``(S, channels, H // 2, W // 2)``: a blur of the image
    (the peaks) plus a small convolution stack (the compute of a real head)."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 1),
        )
        g = torch.exp(-torch.arange(-2.0, 3.0) ** 2 / 2)
        kernel = g[:, None] * g[None, :]
        self.register_buffer("blur", (kernel / kernel.sum()).repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = F.avg_pool2d(x, 2).expand(-1, self.channels, -1, -1)
        return F.conv2d(image, self.blur, padding=2, groups=self.channels) \
            + 1e-3 * self.net(x)


def frames(seed: int = 0) -> np.ndarray:
    """uint8 frames with ``ANIMALS`` bright Gaussian blobs each, apart from the borders."""
    rng = np.random.default_rng(seed)
    samples, _, height, width = FRAMES
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros(FRAMES)
    for s in range(samples):
        for a in range(ANIMALS):
            cx = rng.uniform(60, width / 2 - 20) + a * width / 2
            cy = rng.uniform(60, height - 60)
            image[s, 0] += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 12.0**2))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _head_session(head: nn.Module, example: torch.Tensor, path: Path) -> ort.InferenceSession:
    torch.onnx.export(head, (example,), str(path), input_names=["x"], output_names=["maps"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, dynamo=False)
    return ort.InferenceSession(str(path), _options(), providers=["CPUExecutionProvider"])


def _options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return options


def stages(image: np.ndarray, centroid_session, instance_session):
    """The top-down pipeline as separate stages on the host (see the module docstring)."""
    x = torch.from_numpy(image).to(torch.float32) / 255
    scaled = F.interpolate(x, scale_factor=INPUT_SCALE, mode="bilinear",
                           align_corners=False, antialias=True, recompute_scale_factor=False)
    maps = torch.from_numpy(centroid_session.run(None, {"x": scaled.numpy()})[0])
    points, vals, sample_inds, _ = find_local_peaks(maps, THRESHOLD, "integral")
    keep = []
    for s in range(image.shape[0]):
        mine = (sample_inds == s).nonzero().flatten()
        keep.append(mine[vals[mine].argsort(descending=True)[:ANIMALS]])
    keep = torch.cat(keep)
    centroids = points[keep] * STRIDE / INPUT_SCALE
    boxes = make_centered_bboxes(centroids, CROP, CROP)
    crops = crop_bboxes(x, boxes, sample_inds[keep])
    instance_maps = instance_session.run(None, {"x": crops.numpy()})[0]
    peaks, peak_vals = find_global_peaks(torch.from_numpy(instance_maps), THRESHOLD,
                                         "integral")
    return peaks * STRIDE + boxes[:, None, 0], peak_vals


def _median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    centroid_head, instance_head = ConvHead(1).eval(), ConvHead(PARTS).eval()
    pipeline = TopDownPipeline(centroid_head, instance_head, CROP, ANIMALS,
                               centroid_stride=STRIDE, instance_stride=STRIDE,
                               input_scale=INPUT_SCALE, threshold=THRESHOLD,
                               peak_threshold=THRESHOLD).eval()
    image = frames()
    example = torch.from_numpy(frames(seed=1)[:2, :, :320, :352])

    with tempfile.TemporaryDirectory() as tmp:
        graph_path = export_onnx(pipeline, example, Path(tmp) / "topdown.onnx")
        graph = ort.InferenceSession(str(graph_path), _options(),
                                     providers=["CPUExecutionProvider"])
        centroid_session = _head_session(centroid_head, torch.rand(1, 1, 64, 64),
                                         Path(tmp) / "centroid.onnx")
        instance_session = _head_session(instance_head, torch.rand(2, 1, CROP, CROP),
                                         Path(tmp) / "instance.onnx")
        provider = graph.get_providers()[0]

        with torch.no_grad():
            expected = pipeline(torch.from_numpy(image))
            got = graph.run(None, {"image": image})
            apart, _ = stages(image, centroid_session, instance_session)
        graph_error = float(np.abs(got[2] - expected[2].numpy()).max())
        print(f"frames {FRAMES} uint8, {ANIMALS} instances, {CROP}x{CROP} crops, "
              f"input_scale {INPUT_SCALE}, strides {STRIDE}/{STRIDE}, {PARTS} parts; "
              f"provider {provider}, torch threads {torch.get_num_threads()}")
        print(f"valid slots {int(got[4].sum())} of {got[4].size}; graph vs eager: max "
              f"point difference {graph_error:.2g} px; stages apart (bilinear crops at "
              f"the unrounded centroid) vs graph: max "
              f"{float(np.nanmax(np.abs(apart.numpy() - got[2].reshape(apart.shape)))):.2g} px")

        rows = {}
        with torch.no_grad():
            rows["graph (one ONNX Runtime session)"] = _median_ms(
                lambda: graph.run(None, {"image": image}), args.repeats)
            rows["stages apart (heads in ONNX Runtime, glue in Python)"] = _median_ms(
                lambda: stages(image, centroid_session, instance_session), args.repeats)
            rows["eager PyTorch pipeline"] = _median_ms(
                lambda: pipeline(torch.from_numpy(image)), args.repeats)

    base = rows["graph (one ONNX Runtime session)"]
    print("\n| how | median ms | × graph |\n|---|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
