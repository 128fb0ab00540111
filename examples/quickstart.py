"""Find and refine peaks in synthetic confidence maps; print them."""

import torch

from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks

# Two samples, two body parts, 64 x 80 maps with Gaussian blobs at known sub-pixel points.
truth = torch.tensor([[[10.3, 20.6], [50.4, 40.2]], [[30.8, 12.1], [70.2, 55.7]]])
ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
cms = torch.exp(
    -((xs - truth[..., 0, None, None]) ** 2 + (ys - truth[..., 1, None, None]) ** 2) / (2 * 2.0**2)
)

points, vals = GlobalPeaks(threshold=0.2)(cms)
print("global peaks (x, y):\n", points)
print("true points:\n", truth)

points, vals, sample_inds, channel_inds = LocalPeaks(threshold=0.2)(cms)
print("local peaks:", points.shape[0], "found, samples", sample_inds.tolist())

points, vals, valid = TopKPeaks(k=3)(cms)
print("top-3 slots valid:\n", valid)
