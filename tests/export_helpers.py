"""Shared by the export tests: the graphs (exported once per test process), the cases
they run on, and exact comparisons with eager PyTorch.

Every graph is exported ONCE, at ``EXPORT_SHAPE``, and cached for all test modules of
the run; the cases then run it at other batch and map sizes.
"""

import atexit
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import cases
from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks, export_onnx, export_program

CHANNELS = 3
K = 5  # top-K slots; larger than H * W for the smallest maps below
THRESHOLD = 0.2
EXPORT_SHAPE = (2, CHANNELS, 16, 20)
IMAGE_CHANNELS = 2
PX = 1e-5  # tolerance of refined points, in map pixels

KINDS = ("global", "local", "topk")
EXPORTERS = ("torchscript", "dynamo")

_TMP = Path(tempfile.mkdtemp(prefix="peaklayers-export-"))
atexit.register(shutil.rmtree, _TMP, True)


def make_layer(kind, refinement="integral", flat_tops="drop"):
    if kind == "global":
        assert flat_tops == "drop"
        return GlobalPeaks(THRESHOLD, refinement)
    if kind == "local":
        return LocalPeaks(THRESHOLD, refinement, flat_tops=flat_tops)
    return TopKPeaks(K, THRESHOLD, refinement, flat_tops=flat_tops)


def dyadic_head(dtype=torch.float32):
    """A small conv head whose arithmetic is exact in float16 and float32.

    Weights are multiples of 1/4 in [-1/2, 1/2] and inputs (see :func:`images`) multiples
    of 1/16 in [0, 1], so every sum is a multiple of 1/64 below 10 in magnitude: exact
    in float16 whatever the order of summation. Eager, TorchScript, torch.export and
    ONNX Runtime then feed the peak layer bit-identical maps, and any difference in the
    outputs is the peak layer's.
    """
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(IMAGE_CHANNELS, CHANNELS, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 3, conv.weight.shape, generator=gen) / 4)
        conv.bias.copy_(torch.randint(-2, 3, conv.bias.shape, generator=gen) / 4)
    return nn.Sequential(conv, nn.ReLU()).to(dtype).eval()


def images(samples, height, width, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    shape = (samples, IMAGE_CHANNELS, height, width)
    return (torch.randint(0, 17, shape, generator=gen) / 16).to(dtype)


def make_model(kind, refinement="integral", head=False, dtype=torch.float32, flat_tops="drop"):
    layer = make_layer(kind, refinement, flat_tops)
    if head:
        return nn.Sequential(dyadic_head(dtype), layer).eval()
    return layer


@functools.cache
def exported(kind, exporter, refinement="integral", head=False, dtype=torch.float32,
             flat_tops="drop"):
    """Path of the ONNX graph of one configuration, exported once per test process."""
    model = make_model(kind, refinement, head, dtype, flat_tops)
    if head:
        example = images(EXPORT_SHAPE[0], *EXPORT_SHAPE[2:], seed=99, dtype=dtype)
    else:
        example = cases.gaussians(*EXPORT_SHAPE, seed=99, dtype=dtype)
    name = f"{kind}-{exporter}-{refinement}-{'head' if head else 'alone'}-{dtype}-{flat_tops}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(model, example, _TMP / name, dynamo=exporter == "dynamo")


@functools.cache
def session(kind, exporter, refinement="integral", head=False, dtype=torch.float32,
            flat_tops="drop"):
    import onnxruntime as ort

    path = exported(kind, exporter, refinement, head, dtype, flat_tops)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@functools.cache
def program(kind, refinement="integral", head=False, dtype=torch.float32, flat_tops="drop"):
    model = make_model(kind, refinement, head, dtype, flat_tops)
    if head:
        example = images(EXPORT_SHAPE[0], *EXPORT_SHAPE[2:], seed=99, dtype=dtype)
    else:
        example = cases.gaussians(*EXPORT_SHAPE, seed=99, dtype=dtype)
    return export_program(model, example)


def run_session(sess, x):
    (name,) = [i.name for i in sess.get_inputs()]
    return tuple(torch.from_numpy(out) for out in sess.run(None, {name: x.numpy()}))


def regroup(cms, channels=CHANNELS):
    """The maps of ``cms`` as ``(-1, channels, H, W)``, padded with zero maps.

    Peaks are found per map, so regrouping maps into samples keeps every case's content
    while matching the graph's fixed channel count.
    """
    samples, chans, height, width = cms.shape
    maps = cms.reshape(samples * chans, height, width)
    pad = (-maps.shape[0]) % channels
    maps = torch.cat([maps, maps.new_zeros(pad, height, width)])
    return maps.reshape(-1, channels, height, width)


def map_cases(dtype=torch.float32):
    """(id, maps) pairs at sizes other than EXPORT_SHAPE, from the core case families."""
    c = CHANNELS
    out = [
        ("gauss-1x17x23", cases.gaussians(1, c, 17, 23, sigma=1.7, seed=1, dtype=dtype)),
        ("gauss-3x32x32", cases.gaussians(3, c, 32, 32, sigma=2.0, seed=2, dtype=dtype)),
        ("gauss-2x9x40", cases.gaussians(2, c, 9, 40, peaks=4, sigma=1.5, seed=3, dtype=dtype)),
        ("gauss-5x47x31", cases.gaussians(5, c, 47, 31, peaks=5, sigma=2.5, seed=4, dtype=dtype)),
        ("gauss-1x3x4", cases.gaussians(1, c, 3, 4, peaks=1, sigma=1.0, seed=5, dtype=dtype)),
        ("gauss-2x2x5", cases.gaussians(2, c, 2, 5, peaks=1, sigma=1.0, seed=6, dtype=dtype)),
        ("noisy-1x1x1", cases.noisy(1, c, 1, 1, seed=7, dtype=dtype)),
        ("noisy-2x1x7", cases.noisy(2, c, 1, 7, seed=8, dtype=dtype)),
        ("noisy-3x5x1", cases.noisy(3, c, 5, 1, seed=9, dtype=dtype)),
        ("noisy-2x13x11", cases.noisy(2, c, 13, 11, seed=10, dtype=dtype)),
        ("plateaus", regroup(cases.plateaus(dtype))),
        ("borders", cases.borders(dtype)),
        ("at-threshold", cases.at_threshold(THRESHOLD, dtype)),
        ("below-threshold", cases.gaussians(2, c, 10, 12, seed=11, dtype=dtype) * 0.1),
        ("constant-0", torch.zeros(2, c, 6, 7, dtype=dtype)),
        ("constant-0.5", torch.full((2, c, 6, 7), 0.5, dtype=dtype)),
        ("ties", _ties(dtype)),
        ("empty-batch", torch.zeros(0, c, 8, 9, dtype=dtype)),
    ]
    for name, cms in out:
        assert cms.shape[1] == c and cms.shape[2] * cms.shape[3] > 0, name
        assert cms.shape[2:] != EXPORT_SHAPE[2:], name
    return out


def image_cases(dtype=torch.float32):
    """(id, images) pairs for head + layer graphs, at sizes other than EXPORT_SHAPE."""
    sizes = [(1, 16, 16), (3, 9, 30), (2, 33, 17), (1, 3, 4), (2, 1, 1), (4, 24, 40)]
    return [
        (f"images-{s}x{h}x{w}", images(s, h, w, seed=i, dtype=dtype))
        for i, (s, h, w) in enumerate(sizes)
    ]


def _ties(dtype):
    """Equal peak values (also across the k-th slot) and equal global maxima."""
    cms = torch.zeros(2, CHANNELS, 9, 11, dtype=dtype)
    for y, x in [(7, 7), (1, 7), (7, 1), (4, 4), (1, 1), (4, 9)]:
        cms[:, :, y, x] = 0.5
    cms[0, 1, 4, 7] = 0.75
    cms[1, 2, 2, 3] = 0.75
    return cms


def assert_points(actual, expected, atol=PX):
    assert actual.dtype == expected.dtype == torch.float32
    assert actual.shape == expected.shape
    assert torch.equal(actual.isnan(), expected.isnan())
    a, e = actual.double().numpy(), expected.double().numpy()
    # Non-finite offsets (a patch summing to 0) must agree in kind too.
    assert np.array_equal(np.isinf(a), np.isinf(e))
    finite = np.isfinite(e)
    np.testing.assert_allclose(a[finite], e[finite], rtol=0, atol=atol)


def assert_same(actual, expected, refined=True):
    """Outputs of a peak graph equal eager: everything exact but refined points (1e-5 px)."""
    assert len(actual) == len(expected)
    assert_points(actual[0], expected[0], PX if refined else 0.0)
    for a, e in zip(actual[1:], expected[1:], strict=True):
        assert a.dtype == e.dtype, (a.dtype, e.dtype)
        assert a.shape == e.shape
        assert torch.equal(a, e)


def assert_maps_same(actual, expected):
    """Outputs of a plain head: 4-D maps, exact."""
    (a,), (e,) = actual, expected
    assert a.dtype == e.dtype and torch.equal(a, e)


def eager(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, tuple) else (out,)


def count_valid(outputs, kind):
    """Number of peaks in one output tuple (for the case counts)."""
    if kind == "local":
        return int(outputs[1].shape[0])
    if kind == "topk":
        return int(outputs[2].sum())
    return int((~outputs[0][..., 0].isnan()).sum())


def one_error(code: int, err: str, *words: str) -> None:
    """The tool exited 1 with one line ``export: error: ...`` holding every one of ``words``."""
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error:"), err
    for word in words:
        assert word in lines[0], (word, err)
