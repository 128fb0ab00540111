"""``.pt2`` heads exported with bounded or fixed sizes (issue 11, item 12).

A head given as a ``torch.export`` program keeps the sizes it was exported for: the
export of the model around it uses Dims within them. Oracle: eager PyTorch of the same
head (the dyadic head is exact in every backend) and peak layer, at sizes other than
the export size inside the program's bounds.
"""

import warnings

import pytest
import torch
from torch import nn
from torch.export import Dim

from export_helpers import IMAGE_CHANNELS, assert_same, dyadic_head, eager, images, run_session
from peaklayers import LocalPeaks, TopKPeaks, export_onnx, export_program

EXAMPLE = images(2, 32, 40, seed=1)
BOUNDS = {
    "min16-max256": {0: Dim("b", min=1, max=8), 2: Dim("h", min=16, max=256),
                     3: Dim("w", min=16, max=256)},
    "min16-fixed-batch": {2: Dim("h", min=16), 3: Dim("w")},
    "max64": {0: Dim("b"), 2: Dim("h", max=64), 3: Dim("w", max=64)},
}
# (batch, height, width) inside every program's bounds; the batch of 2 fits the fixed one
SIZES = [(2, 16, 17), (2, 33, 64), (2, 64, 20)]


def _program(bounds):
    return torch.export.export(dyadic_head(), (EXAMPLE,), dynamic_shapes=(bounds,))


def _model(bounds, layer):
    return nn.Sequential(_program(bounds).module(), layer)


@pytest.mark.parametrize("bounds", list(BOUNDS))
@pytest.mark.parametrize("alone", [True, False], ids=["program", "program+layer"])
def test_export_program_within_bounds(bounds, alone):
    layer = LocalPeaks(0.2)
    model = _program(BOUNDS[bounds]) if alone else _model(BOUNDS[bounds], layer)
    reference = dyadic_head() if alone else nn.Sequential(dyadic_head(), layer)
    prog = export_program(model, EXAMPLE)
    for size in SIZES:
        x = images(size[0], *size[1:], seed=sum(size))
        with torch.no_grad():
            got = prog.module()(x)
        expected = eager(reference, x)
        if alone:
            assert torch.equal(got, expected[0])
        else:
            assert_same(tuple(got), expected)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("bounds", ["min16-max256", "max64"])
def test_export_onnx_within_bounds(tmp_path, exporter, bounds):
    import onnxruntime as ort

    layer = TopKPeaks(3, 0.2) if bounds == "max64" else LocalPeaks(0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(_model(BOUNDS[bounds], layer), EXAMPLE, tmp_path / "m.onnx",
                           dynamo=exporter == "dynamo", input_name="image")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in SIZES:
        x = images(size[0], *size[1:], seed=sum(size))
        assert_same(run_session(sess, x), eager(nn.Sequential(dyadic_head(), layer), x))


class _Checked(nn.Module):
    """A module that constrains its input's height itself (not through a program)."""

    def forward(self, x):
        torch._check(x.shape[2] <= 100)
        return x.sigmoid()


def test_constraints_inside_the_model_give_a_clear_error():
    with pytest.raises(ValueError, match="restricts its input sizes.*min=1"):
        export_program(_Checked(), torch.rand(2, IMAGE_CHANNELS, 16, 16))
