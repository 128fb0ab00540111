"""Fuzz test of the three peak layers against the pixel-loop oracle (tests/oracle.py).

Random small maps of a few levels (ties, flat tops and values at the threshold are
common), with +-inf pixels placed next to and around the peaks, given in every memory
layout a caller may hand over: contiguous, channels_last, and non-contiguous views
(every other column of a wider map, a transposed map). Every layer (global, local and
top-K; both flat-top modes for the local ones; refinement on and off, odd and even
patches, output stride) must equal its function and the oracle on each.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from test_peaks import check_global, check_local, check_topk

# Multiples of 1/8: bilinear samples and patch sums are exact in float32 and float64,
# so the refined points of the layers and of the oracle differ by rounding at most.
LEVELS = [-0.5, 0.0, 0.125, 0.25, 0.5, 0.75, 1.0]
INF = float("inf")


@st.composite
def maps_with_infs(draw):
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 2)),
        draw(st.integers(1, 9)),
        draw(st.integers(1, 9)),
    )
    values = draw(
        st.lists(st.sampled_from(LEVELS), min_size=int(np.prod(shape)),
                 max_size=int(np.prod(shape)))
    )
    cms = torch.tensor(values, dtype=torch.float32).reshape(shape)
    # Infinities near the largest pixels: beside a peak, at the edge of its patch, or
    # just outside it, where only a wrong refinement window would see them.
    samples, channels, height, width = shape
    for _ in range(draw(st.integers(0, 3))):
        flat = int(cms.reshape(-1).argmax())
        x, y = flat % width, (flat // width) % height
        s, c = flat // (width * height * channels), (flat // (width * height)) % channels
        dx, dy = draw(st.integers(-4, 4)), draw(st.integers(-4, 4))
        if (dx, dy) != (0, 0) and 0 <= x + dx < width and 0 <= y + dy < height:
            cms[s, c, y + dy, x + dx] = draw(st.sampled_from([INF, -INF]))
    return cms


def _layout(cms: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if layout == "channels_last":
        out = cms.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # every other column of a map twice as wide
        wide = torch.zeros(*cms.shape[:3], 2 * cms.shape[3])
        wide[..., ::2] = cms
        out = wide[..., ::2]
    elif layout == "transposed":  # a (S, C, W, H) tensor seen through a transpose
        out = cms.transpose(2, 3).contiguous().transpose(2, 3)
    else:
        out = cms
    assert torch.equal(out, cms)
    return out


@settings(max_examples=150, deadline=None)
@given(
    maps_with_infs(),
    st.sampled_from(["contiguous", "channels_last", "strided", "transposed"]),
    st.sampled_from(["global", "local-drop", "local-merge", "topk-drop", "topk-merge"]),
    st.sampled_from([None, "integral"]),
    st.integers(1, 8),
    st.sampled_from([0.0, 0.25, 0.5]),
    st.sampled_from([1.0, 4.0]),
)
def test_layers_match_oracle(cms, layout, kind, refinement, patch_size, threshold, stride):
    cms = _layout(cms, layout)
    with np.errstate(invalid="ignore"):  # the oracle's inf * 0 and inf - inf are meant
        if kind == "global":
            check_global(cms, threshold, refinement, patch_size, stride)
        elif kind.startswith("local"):
            check_local(cms, threshold, refinement, patch_size, stride, kind.split("-")[1])
        else:
            check_topk(cms, 3, threshold, refinement, patch_size, stride, kind.split("-")[1])
