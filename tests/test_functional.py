"""Reference-named helpers of peaklayers.functional (SPEC §2) against plain loops."""

import numpy as np
import pytest
import torch

import cases
import oracle
from peaklayers import functional


def test_integral_regression():
    cms = cases.gaussians(2, 3, 7, 9, seed=4).double()
    xv = torch.linspace(-4, 4, 9, dtype=torch.float64)
    yv = torch.linspace(-3, 3, 7, dtype=torch.float64)
    x_hat, y_hat = functional.integral_regression(cms, xv, yv)
    for s in range(2):
        for c in range(3):
            m = cms[s, c].numpy()
            total = sum(m[y, x] for y in range(7) for x in range(9))
            ex = sum(m[y, x] * xv[x].item() for y in range(7) for x in range(9)) / total
            ey = sum(m[y, x] * yv[y].item() for y in range(7) for x in range(9)) / total
            assert x_hat[s, c].item() == pytest.approx(ex, abs=1e-12)
            assert y_hat[s, c].item() == pytest.approx(ey, abs=1e-12)


@pytest.mark.parametrize("height, width", [(5, 5), (4, 6), (1, 3)])
def test_make_centered_bboxes(height, width):
    centroids = torch.tensor([[10.0, 20.0], [3.5, 7.25]])
    boxes = functional.make_centered_bboxes(centroids, height, width)
    assert boxes.shape == (2, 4, 2)
    for i, (x, y) in enumerate(centroids.tolist()):
        hw, hh = width / 2 - 0.5, height / 2 - 0.5
        expected = [[x - hw, y - hh], [x + hw, y - hh], [x + hw, y + hh], [x - hw, y + hh]]
        assert boxes[i].tolist() == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_crop_bboxes(dtype):
    images = cases.gaussians(3, 2, 12, 15, seed=9, dtype=dtype)
    centroids = torch.tensor([[4.0, 5.0], [0.0, 0.0], [14.0, 11.0], [7.5, 3.5]])
    boxes = functional.make_centered_bboxes(centroids, 5, 5)
    sample_inds = torch.tensor([0, 2, 1, 2], dtype=torch.int32)
    crops = functional.crop_bboxes(images, boxes, sample_inds)
    assert crops.shape == (4, 2, 5, 5) and crops.dtype == dtype
    exact = oracle.as_exact(images)
    rtol = 2**-10 if dtype == torch.float16 else 0  # one rounding to the output dtype
    for i in range(4):
        x0, y0 = boxes[i, 0].tolist()
        for c in range(2):
            for r in range(5):
                for q in range(5):
                    want = oracle._sample(exact[sample_inds[i], c], x0 + q, y0 + r)
                    want = float(torch.tensor(want, dtype=dtype))
                    np.testing.assert_allclose(crops[i, c, r, q].item(), want, rtol=rtol, atol=2e-6)


def test_crop_bboxes_no_boxes():
    crops = functional.crop_bboxes(
        torch.rand(2, 3, 8, 8), torch.zeros(0, 4, 2), torch.zeros(0, dtype=torch.int64)
    )
    assert crops.shape == (0, 3, 0, 0)
