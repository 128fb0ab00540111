"""Non-finite pixels near peaks (SPEC §4): one outside a peak's refinement patch never
changes that peak. Oracle: the pixel loops of tests/oracle.py, and the same map
without the non-finite pixel."""

import warnings

import numpy as np
import onnx
import pytest
import torch

from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks, export_onnx
from test_graph_audit import cuda_problems, op_types, tensorrt_problems
from test_peaks import check_global, check_local, check_topk

PEAK = (9, 10)  # (x, y) of the one peak of value 1 in channel 0
SIZE = (20, 21)  # (H, W)


def _base(seed):
    """(1, 2, H, W) maps of values in [0, 0.5) with one peak of value 1 in channel 0."""
    gen = torch.Generator().manual_seed(seed)
    cms = torch.rand(1, 2, *SIZE, generator=gen) * 0.5
    cms[0, 0, PEAK[1], PEAK[0]] = 1.0
    return cms


def _ring(distance):
    """The corners and edge midpoints of the square ring at Chebyshev ``distance``."""
    return [(dx, dy) for dx in (-distance, 0, distance) for dy in (-distance, 0, distance)
            if (dx, dy) != (0, 0)]


def _peak_point(kind, patch_size, cms):
    """The refined point of the value-1 peak of channel 0, or None if it is no peak."""
    if kind == "global":
        points, vals = GlobalPeaks(0.2, "integral", patch_size)(cms)
        return points[0, 0] if vals[0, 0] == 1.0 else None
    if kind == "local":
        points, vals, _, channels = LocalPeaks(0.2, "integral", patch_size)(cms)
        mine = (vals == 1.0) & (channels == 0)
    else:
        points, vals, valid = TopKPeaks(4, 0.2, "integral", patch_size)(cms)
        points, vals = points[0, 0], vals[0, 0]
        mine = valid[0, 0] & (vals == 1.0)
    return points[mine][0] if bool(mine.any()) else None


CHECKS = {
    "global": check_global,
    "local": check_local,
    "topk": lambda cms, *a: check_topk(cms, 4, *a),
}


@pytest.mark.parametrize("kind", list(CHECKS))
@pytest.mark.parametrize("patch_size", range(1, 9))
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_nonfinite_pixel_outside_patch(kind, patch_size, value):
    # Samples reach ``patch_size // 2`` pixels from the peak (even sizes through their
    # bilinear weights); the refinement window reaches further for sizes 1, 7.
    half = patch_size // 2
    clean = _base(patch_size)
    expected = _peak_point(kind, patch_size, clean)
    assert expected is not None and bool(torch.isfinite(expected).all())
    for distance in (half + 1, half + 2):
        for dx, dy in _ring(distance):
            cms = clean.clone()
            cms[0, 0, PEAK[1] + dy, PEAK[0] + dx] = value
            CHECKS[kind](cms, 0.2, "integral", patch_size)
            got = _peak_point(kind, patch_size, cms)
            if value > 0 and (kind == "global" or distance == 1):
                # +inf is then the global maximum, or an 8-neighbour that ends the peak.
                assert got is None
                continue
            assert got is not None and torch.equal(got, expected), (distance, dx, dy, got)


@pytest.mark.parametrize("kind", list(CHECKS))
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_nonfinite_pixel_inside_patch(kind, value):
    """Inside the patch the pixel does reach the offset: NaN, as the oracle computes."""
    cms = _base(3)
    cms[0, 0, PEAK[1] + 1, PEAK[0] + 2] = value
    CHECKS[kind](cms, 0.2, "integral", 5)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("patch_size", [1, 7])
def test_exported_window_ignores_nonfinite_pixel(tmp_path, exporter, patch_size):
    """ONNX Runtime gives the eager result: the zeroed window is part of the graph."""
    import onnxruntime as ort

    layer = TopKPeaks(3, 0.2, "integral", patch_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(layer, _base(0), tmp_path / "topk.onnx", dynamo=exporter == "dynamo")
    # The zero-padded window keeps the graph servable: CUDA kernels and TensorRT ops only.
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True)
    assert cuda_problems(model) == [] and tensorrt_problems(model) == [], op_types(model)
    assert "NonZero" not in op_types(model)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cms = _base(1)[:, :, :17, :19].contiguous()
    cms[0, 0, PEAK[1] + patch_size // 2 + 1, PEAK[0]] = float("-inf")
    name = sess.get_inputs()[0].name
    got = sess.run(None, {name: cms.numpy()})
    points, vals, valid = layer(cms)
    np.testing.assert_array_equal(got[2], valid.numpy())
    np.testing.assert_array_equal(got[1], vals.numpy())
    np.testing.assert_allclose(got[0], points.numpy(), rtol=0, atol=1e-5, equal_nan=True)
    assert np.isfinite(got[0][0, 0, 0]).all()
