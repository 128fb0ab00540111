"""Boolean maps packed eight to a byte (peaklayers.ops._bits)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peaklayers.ops._bits import pack_maps, unpack_maps


def masks(max_maps=20):
    shapes = st.tuples(st.integers(0, 3), st.integers(0, max_maps // 3), st.integers(1, 5),
                       st.integers(1, 6))
    return arrays(np.bool_, shapes).map(torch.from_numpy)


@settings(max_examples=60, deadline=None)
@given(masks())
def test_round_trip(mask):
    packed = pack_maps(mask)
    maps = mask.shape[0] * mask.shape[1]
    assert packed.dtype == torch.uint8 and packed.shape == ((maps + 7) // 8, *mask.shape[2:])
    assert torch.equal(unpack_maps(packed, mask.shape[0], mask.shape[1]), mask)


@settings(max_examples=60, deadline=None)
@given(masks(), st.data())
def test_shifted_bitwise_ops_act_per_map(a, data):
    b = data.draw(arrays(np.bool_, tuple(a.shape)).map(torch.from_numpy))
    samples, channels = a.shape[0], a.shape[1]
    pa, pb = pack_maps(a), pack_maps(b)
    # A shifted view combined with an unshifted one, as the flat-top rule does.
    got = unpack_maps((pa[..., 1:, :] | pb[..., :-1, :]) & ~pa[..., :-1, :], samples, channels)
    assert torch.equal(got, (a[..., 1:, :] | b[..., :-1, :]) & ~a[..., :-1, :])


@pytest.mark.parametrize("maps", [1, 7, 8, 9, 17])
def test_bit_order(maps):
    mask = torch.zeros(1, maps, 1, 1, dtype=torch.bool)
    mask[0, -1] = True
    packed = pack_maps(mask)
    assert int(packed[(maps - 1) // 8]) == 1 << ((maps - 1) % 8)
