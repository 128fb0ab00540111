"""In-graph class-map lookup (SPEC §3.1 step 1) against the per-peak oracle, and in graphs."""

import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import identity_oracle as oracle
from peaklayers.ops.class_maps import ClassMapLookup, class_probabilities


def random_points(n, height, width, seed):
    """Points spread beyond the map, many exactly at .5, a NaN and infinities."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.rand(n, generator=gen) * (width + 4) - 2
    ys = torch.rand(n, generator=gen) * (height + 4) - 2
    points = torch.stack([xs, ys], dim=1)
    halves = torch.randint(-1, max(width, height) + 1, (n, 2), generator=gen).float() + 0.5
    points[::3] = halves[::3]
    if n > 6:
        points[1, 0] = float("nan")
        points[2] = torch.tensor([float("inf"), -float("inf")])
    return points


def assert_same(actual, expected):
    actual = actual.double().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)  # NaN == NaN for assert_array_equal


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_lookup_matches_oracle(dtype, index_dtype):
    maps = torch.rand(3, 4, 7, 9, generator=torch.Generator().manual_seed(1)).to(dtype)
    points = random_points(40, 7, 9, seed=2)
    samples = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(3))
    probs = class_probabilities(maps, points, samples.to(index_dtype))
    assert probs.dtype == dtype and probs.shape == (40, 4)
    assert_same(probs, oracle.lookup(maps.double().numpy(), points.numpy(), samples.numpy()))
    assert torch.isnan(probs[1]).all()  # the NaN point


def test_round_half_to_even():
    """x = 0.5 reads column 0, 1.5 and 2.5 read column 2, 3.5 reads column 4."""
    maps = torch.arange(6.0).reshape(1, 1, 1, 6)
    points = torch.tensor([[0.5, 0.0], [1.5, 0.0], [2.5, 0.0], [3.5, 0.0], [-0.5, 0.0]])
    probs = class_probabilities(maps, points, torch.zeros(5, dtype=torch.int32))
    assert probs[:, 0].tolist() == [0.0, 2.0, 2.0, 4.0, 0.0]


@pytest.mark.parametrize("stride", [1.0, 2.0, 4.0])
def test_stride(stride):
    maps = torch.rand(2, 3, 6, 5)
    points = random_points(20, 6, 5, seed=5) * stride
    samples = torch.randint(0, 2, (20,))
    probs = ClassMapLookup(stride)(maps, points, samples)
    assert_same(probs, oracle.lookup(maps.numpy(), points.numpy(), samples.numpy(), stride))


def test_topk_form_equals_variable_form():
    maps = torch.rand(2, 3, 8, 6)
    points = random_points(2 * 4 * 5, 8, 6, seed=7).reshape(2, 4, 5, 2)
    probs = class_probabilities(maps, points)
    assert probs.shape == (2, 4, 5, 3)
    samples = torch.arange(2).repeat_interleave(20)
    flat = class_probabilities(maps, points.reshape(-1, 2), samples)
    torch.testing.assert_close(probs.reshape(-1, 3), flat, rtol=0, atol=0, equal_nan=True)


def test_empty_inputs():
    maps = torch.rand(2, 3, 4, 4)
    assert class_probabilities(maps, torch.zeros(0, 2), torch.zeros(0, dtype=torch.int32)).shape \
        == (0, 3)
    assert class_probabilities(maps, torch.zeros(2, 0, 5, 2)).shape == (2, 0, 5, 3)
    assert class_probabilities(torch.rand(0, 3, 4, 4), torch.zeros(0, 2, 5, 2)).shape \
        == (0, 2, 5, 3)


def test_bad_input():
    maps = torch.rand(2, 3, 4, 4)
    points, samples = torch.rand(5, 2), torch.zeros(5, dtype=torch.int32)
    with pytest.raises(ValueError, match="class_maps"):
        class_probabilities(maps[0], points, samples)
    with pytest.raises(TypeError, match="class_maps"):
        class_probabilities(maps.int(), points, samples)
    with pytest.raises(ValueError, match="sample_inds"):
        class_probabilities(maps, points, samples[:4])
    with pytest.raises(ValueError, match="sample_inds"):
        class_probabilities(maps, points, samples + 2)
    with pytest.raises(ValueError, match="sample_inds"):
        class_probabilities(maps, points, samples - 1)
    with pytest.raises(TypeError, match="sample_inds"):
        class_probabilities(maps, points, samples.float())
    with pytest.raises(ValueError, match="points"):
        class_probabilities(maps, torch.rand(5, 3), samples)
    with pytest.raises(ValueError, match="points"):
        class_probabilities(maps, torch.rand(3, 2, 4, 2))  # 3 samples vs 2 maps
    with pytest.raises(ValueError, match="stride"):
        ClassMapLookup(0.0)
    with pytest.raises(TypeError, match="stride"):
        ClassMapLookup("2")


def _inputs(samples, classes, height, width, n, seed):
    gen = torch.Generator().manual_seed(seed)
    maps = torch.rand(samples, classes, height, width, generator=gen)
    points = random_points(n, height, width, seed)
    sample_inds = torch.randint(0, samples, (n,), generator=gen, dtype=torch.int32)
    return maps, points, sample_inds


def test_script_and_trace_equal_eager():
    module = ClassMapLookup(2.0)
    scripted = torch.jit.script(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, _inputs(2, 3, 8, 9, 10, 0))
    for args in (_inputs(3, 3, 11, 5, 17, 1), _inputs(1, 3, 4, 13, 0, 2)):
        expected = module(*args)
        for graph in (scripted, traced):
            torch.testing.assert_close(graph(*args), expected, rtol=0, atol=0, equal_nan=True)
    maps, points = _inputs(2, 3, 8, 9, 2 * 3 * 4, 3)[:2]
    topk = points.reshape(2, 3, 4, 2)
    torch.testing.assert_close(scripted(maps, topk), module(maps, topk), rtol=0, atol=0,
                               equal_nan=True)


def _export(module, args, names, dynamo):
    if dynamo:
        from torch.export import Dim

        dims = {"S": Dim("S"), "K": Dim("K"), "H": Dim("H"), "W": Dim("W"), "N": Dim("N")}
        shapes = {"class_maps": {0: dims["S"], 1: dims["K"], 2: dims["H"], 3: dims["W"]}}
        if len(args) == 3:
            shapes["points"] = {0: dims["N"]}
            shapes["sample_inds"] = {0: dims["N"]}
        else:
            shapes["points"] = {0: dims["S"], 1: Dim("C"), 2: Dim("slots")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=shapes,
                                        input_names=names, verbose=False)
        data = program.model_proto.SerializeToString()
    else:
        axes = {"class_maps": [0, 1, 2, 3], "points": [0] if len(args) == 3 else [0, 1, 2]}
        if len(args) == 3:
            axes["sample_inds"] = [0]
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17,
                              input_names=names, output_names=["class_probs"],
                              dynamic_axes=axes)
        data = buffer.getvalue()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_runtime_equals_eager_variable_form(dynamo):
    module = ClassMapLookup().eval()
    names = ["class_maps", "points", "sample_inds"]
    session = _export(module, _inputs(2, 3, 8, 9, 10, 0), names, dynamo)
    # Other sizes, and no peaks at all.
    cases = (_inputs(3, 4, 11, 5, 23, 1), _inputs(1, 2, 6, 14, 7, 2), _inputs(2, 3, 7, 7, 0, 3))
    for args in cases:
        feeds = {name: a.numpy() for name, a in zip(names, args, strict=True)}
        got = session.run(None, feeds)[0]
        np.testing.assert_array_equal(got, module(*args).numpy())


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_runtime_equals_eager_topk_form(dynamo):
    module = ClassMapLookup(4.0).eval()
    names = ["class_maps", "points"]
    maps, points = _inputs(2, 3, 8, 9, 2 * 3 * 4, 0)[:2]
    session = _export(module, (maps, points.reshape(2, 3, 4, 2) * 4), names, dynamo)
    for shape, seed in (((3, 5, 12, 7), 1), ((1, 2, 5, 5), 2)):
        maps = torch.rand(shape[0], shape[1], shape[2], shape[3])
        points = random_points(shape[0] * 2 * 6, shape[2], shape[3], seed)
        points = points.reshape(shape[0], 2, 6, 2) * 4
        got = session.run(None, {"class_maps": maps.numpy(), "points": points.numpy()})[0]
        np.testing.assert_array_equal(got, module(maps, points).numpy())
