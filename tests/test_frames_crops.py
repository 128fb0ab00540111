"""Frame preprocessing (SPEC §5.1) and exact centred crops (SPEC §5.4).

Oracles: PyTorch's own ``F.interpolate`` (bilinear, ``align_corners=False``, antialiased
when shrinking) for the resize; plain loops for padding and crops (``pixel_crop`` below,
written from the SPEC: top-left ``floor(c + 0.5) - size // 2``, zeros outside); and the
functional API's ``crop_bboxes(make_centered_bboxes(...))`` for even crop sizes.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from peaklayers.functional import crop_bboxes, make_centered_bboxes
from peaklayers.ops.crops import CentredCrops, centred_crops
from peaklayers.ops.frames import PrepareFrames, prepare_frames, to_frame_pixels

SCALES = [0.5, 0.37, 0.25, 1.0, 1.5, 2.0]


def pixel_crop(frame: np.ndarray, cx: float, cy: float, h: int, w: int) -> np.ndarray:
    """One crop of a (C, H, W) frame by loops; all zeros for a non-finite centre."""
    out = np.zeros((frame.shape[0], h, w), dtype=frame.dtype)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        return out
    x0 = math.floor(cx + 0.5) - w // 2
    y0 = math.floor(cy + 0.5) - h // 2
    for v in range(h):
        for u in range(w):
            y, x = y0 + v, x0 + u
            if 0 <= y < frame.shape[1] and 0 <= x < frame.shape[2]:
                out[:, v, u] = frame[:, y, x]
    return out


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(2, 3, 61, 47), (1, 1, 8, 9), (3, 1, 5, 4)])
def test_resize_equals_interpolate(scale, shape):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    got = prepare_frames(image, scale)
    want = F.interpolate(
        image, scale_factor=scale, mode="bilinear", align_corners=False,
        antialias=scale < 1, recompute_scale_factor=False,
    )
    assert got.shape == want.shape == (
        shape[0], shape[1], math.floor(shape[2] * scale), math.floor(shape[3] * scale)
    )
    # PyTorch's plain bilinear kernel rounds its weights differently (~2e-6 at s = 1.5).
    torch.testing.assert_close(got, want, atol=5e-6, rtol=0)


def test_uint8_is_divided_by_255_and_padded_with_zeros():
    image = torch.randint(0, 256, (2, 1, 13, 21), dtype=torch.uint8)
    got = prepare_frames(image, 1.0, 8)
    assert got.dtype == torch.float32 and got.shape == (2, 1, 16, 24)
    want = np.zeros((2, 1, 16, 24), np.float32)
    want[:, :, :13, :21] = image.numpy() / np.float32(255)
    np.testing.assert_array_equal(got.numpy(), want)


def test_float_frames_pass_through_and_multiple_is_kept():
    image = torch.rand(1, 2, 16, 32, dtype=torch.float64)
    got = prepare_frames(image, 1.0, 16)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), image.float().numpy())


def test_frame_pixels():
    points = torch.tensor([[1.0, 2.0], [float("nan"), 3.0]])
    got = to_frame_pixels(points, 4.0, 0.5)
    np.testing.assert_array_equal(got.numpy(), [[8.0, 16.0], [np.nan, 24.0]])


def test_scripted_layer_equals_eager():
    layer = PrepareFrames(0.5, 16)
    image = torch.randint(0, 256, (2, 1, 37, 53), dtype=torch.uint8)
    torch.testing.assert_close(torch.jit.script(layer)(image), layer(image), atol=0, rtol=0)
    assert "input_scale=0.5" in repr(layer)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"input_scale": 0.0}, "input_scale"), ({"input_scale": -1.0}, "input_scale"),
     ({"input_scale": float("nan")}, "input_scale"), ({"max_stride": 0}, "max_stride")],
)
def test_bad_frame_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PrepareFrames(**kwargs)
    with pytest.raises(ValueError, match=name):
        prepare_frames(torch.zeros(1, 1, 4, 4), **kwargs)


def test_bad_frames():
    with pytest.raises(ValueError, match="image"):
        prepare_frames(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="image"):
        prepare_frames(torch.zeros(1, 1, 4, 4, dtype=torch.int32))


# -- crops ---------------------------------------------------------------------------------


def _check_crops(image, centres, h, w):
    crops, top_left = centred_crops(image, centres, h, w)
    samples, slots = centres.shape[:2]
    assert crops.shape == (samples, slots, image.shape[1], h, w)
    assert crops.dtype == image.dtype and top_left.dtype == torch.float32
    frames = image.numpy()
    for s in range(samples):
        for i in range(slots):
            cx, cy = (float(v) for v in centres[s, i])
            np.testing.assert_array_equal(crops[s, i].numpy(), pixel_crop(frames[s], cx, cy, h, w))
            if math.isfinite(cx) and math.isfinite(cy):
                want = [math.floor(cx + 0.5) - w // 2, math.floor(cy + 0.5) - h // 2]
                np.testing.assert_array_equal(top_left[s, i].numpy(), want)
            else:
                assert torch.isnan(top_left[s, i]).all()


@pytest.mark.parametrize(("h", "w"), [(4, 4), (5, 3), (1, 1), (6, 7), (30, 40)])
def test_crops_equal_pixel_loops(h, w):
    generator = torch.Generator().manual_seed(h * 100 + w)
    image = torch.rand(2, 3, 11, 17, generator=generator)
    nan = float("nan")
    centres = torch.tensor([
        [[0.0, 0.0], [16.0, 10.0], [8.5, 4.5], [-3.2, 5.0], [5.49, 12.7], [nan, nan]],
        [[16.6, -0.6], [2.5, 9.4999], [40.0, 40.0], [0.0, 10.0], [nan, 3.0], [7.0, 7.0]],
    ])
    _check_crops(image, centres, h, w)


@pytest.mark.parametrize("seed", range(4))
def test_crops_random_centres(seed):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, 1, 9, 14), generator=generator, dtype=torch.uint8)
    centres = torch.rand(3, 5, 2, generator=generator) * 24 - 5
    _check_crops(image, centres, 3 + seed, 6 - seed)


def test_crops_empty_batch_and_no_slots():
    crops, top_left = centred_crops(torch.rand(0, 2, 8, 8), torch.zeros(0, 3, 2), 4, 5)
    assert crops.shape == (0, 3, 2, 4, 5) and top_left.shape == (0, 3, 2)
    crops, top_left = centred_crops(torch.rand(2, 2, 8, 8), torch.zeros(2, 0, 2), 4, 5)
    assert crops.shape == (2, 0, 2, 4, 5) and top_left.shape == (2, 0, 2)


@pytest.mark.parametrize(("h", "w"), [(4, 4), (6, 2), (8, 10), (3, 5), (1, 7)])
def test_crops_equal_functional_crop_bboxes(h, w):
    """The reference's boxes start at ``c - (size / 2 - 0.5)``: on a pixel when ``c`` is
    a half-integer for an even size, an integer for an odd size; there its bilinear
    crop reads exact pixels and must equal ours."""
    generator = torch.Generator().manual_seed(h + w)
    image = torch.rand(2, 2, 13, 15, generator=generator)
    grid = torch.randint(-3, 17, (2, 3, 2), generator=generator).to(torch.float32)
    centres = grid + torch.tensor([0.5 if w % 2 == 0 else 0.0, 0.5 if h % 2 == 0 else 0.0])
    crops, _ = centred_crops(image, centres, h, w)
    boxes = make_centered_bboxes(centres.reshape(-1, 2), h, w)
    want = crop_bboxes(image, boxes, torch.arange(2).repeat_interleave(3))
    torch.testing.assert_close(crops.reshape(6, 2, h, w), want, atol=1e-6, rtol=0)


def test_crop_layer_scripts_and_checks():
    layer = CentredCrops(5, 4)
    image = torch.rand(2, 1, 9, 9)
    centres = torch.rand(2, 3, 2) * 9
    for got, want in zip(torch.jit.script(layer)(image, centres), layer(image, centres),
                         strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0, equal_nan=True)
    with pytest.raises(ValueError, match="crop_height"):
        CentredCrops(0, 4)
    with pytest.raises(ValueError, match="crop_width"):
        centred_crops(image, centres, 4, 0)
    with pytest.raises(TypeError, match="crop_width"):
        CentredCrops(4, 2.5)
    with pytest.raises(ValueError, match="centres"):
        centred_crops(image, centres[0], 4, 4)
