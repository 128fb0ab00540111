"""torch.jit.script and torch.jit.trace give the eager result at other sizes (SPEC §4)."""

import warnings

import pytest
import torch

import cases
from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks

LAYERS = {
    "global": lambda: GlobalPeaks(0.2),
    "global-rough": lambda: GlobalPeaks(0.2, None),
    "local": lambda: LocalPeaks(0.2),
    "local-even-patch-stride": lambda: LocalPeaks(0.2, "integral", 4, 2),
    "topk": lambda: TopKPeaks(5, 0.2),
    "topk-rough": lambda: TopKPeaks(3, 0.2, None),
}

# Traced at the first size, run at the others: other batch sizes, non-square, odd,
# smaller than the patch, and a single pixel.
TRACE_INPUT = cases.gaussians(2, 3, 24, 32, seed=1)
RUN_INPUTS = [
    cases.gaussians(1, 3, 17, 11, seed=2),
    cases.gaussians(5, 3, 40, 33, seed=3),
    cases.gaussians(3, 3, 3, 4, sigma=0.8, seed=4),
    cases.plateaus()[:, :3],
    cases.borders(),
    cases.noisy(2, 3, 1, 1, seed=5),
    cases.gaussians(2, 3, 16, 16, seed=6, dtype=torch.float16),
]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert torch.equal(a.isnan(), e.isnan())
        # Same ops in the same order: bit-identical results.
        assert torch.equal(a.nan_to_num(), e.nan_to_num())


@pytest.mark.parametrize("name", LAYERS)
def test_script(name):
    layer = LAYERS[name]()
    scripted = torch.jit.script(layer)
    for cms in [TRACE_INPUT, *RUN_INPUTS]:
        assert_same(scripted(cms), layer(cms))


@pytest.mark.parametrize("name", LAYERS)
def test_trace(name):
    layer = LAYERS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(layer, TRACE_INPUT, check_trace=False)
    for cms in RUN_INPUTS:
        if cms.shape[1] != TRACE_INPUT.shape[1]:
            cms = cms[:, :1].expand(-1, TRACE_INPUT.shape[1], -1, -1).contiguous()
        assert_same(traced(cms), layer(cms))


def test_scripted_layer_still_validates():
    scripted = torch.jit.script(LocalPeaks())
    with pytest.raises(Exception, match="4-D"):
        scripted(torch.zeros(3, 4, 5))
