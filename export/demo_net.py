"""The embedded demo: a tiny confidence-map network with designed weights, and synthetic frames.

Frames are RGB pictures of "animals": a grey elliptical body (bright for animal class 0,
dark for class 1) with three coloured markers on its axis — head (red), thorax (green),
tail (blue). A marker pushes its own colour up and the two others down by half as much,
so it changes colour but not brightness. The network needs no training:

* confidence maps: per colour, ``relu(own - (others) / 2)`` isolates the markers (the
  grey body and background give 0), then a Gaussian blur with stride 2 turns each
  marker into a Gaussian bump centred on it in map pixels (map pixel ``j`` sits on
  image pixel ``2 j``, so the output stride is exactly 2);
* class maps: brightness is split into two bands (bright body, dark body) with
  clamped ramps and blurred the same way; identity lookups at a peak read ~1 for
  the animal's own class.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

PARTS = ("head", "thorax", "tail")
CLASSES = ("bright", "dark")
STRIDE = 2
_BODY_BRIGHTNESS = (0.75, 0.40)  # per class
_BACKGROUND = 0.10
_MARKER_SIGMA = 1.5
_MARKER_AMPLITUDE = 0.25
_BLUR_SIGMA = 2.0


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(r**2) / (2 * sigma**2))
    kernel = g[:, None] * g[None, :]
    return (kernel / kernel.sum()).to(torch.float32)


class DemoHead(nn.Module):
    """``forward(frames (Tensor[S, 3, H, W]))`` → ``(confmaps (Tensor[S, 3, h, w]),
    class_maps (Tensor[S, 2, h, w]))`` with ``h = ceil(H / 2)``, ``w = ceil(W / 2)``."""

    def __init__(self) -> None:
        super().__init__()
        radius = 4
        self.chroma = nn.Conv2d(3, 3, 1)
        self.brightness = nn.Conv2d(3, 2, 1)  # two ramps of the mean brightness
        self.bands = nn.Conv2d(2, 2, 1, bias=False)  # bright = ramp0, dark = ramp1 - ramp0
        self.blur = nn.Conv2d(5, 5, 2 * radius + 1, stride=STRIDE, padding=radius, groups=5,
                              bias=False)
        # Peak of a marker after the blur: amplitude * 1.5 * s_m^2 / (s_m^2 + s_b^2); scale to 0.9.
        peak = _MARKER_AMPLITUDE * 1.5 * _MARKER_SIGMA**2 / (_MARKER_SIGMA**2 + _BLUR_SIGMA**2)
        with torch.no_grad():
            self.chroma.weight.copy_((torch.eye(3) * 1.5 - 0.5)[:, :, None, None] * (0.9 / peak))
            self.chroma.bias.zero_()
            self.brightness.weight.fill_(10.0 / 3.0)  # 10 * mean
            # Ramps reach 1 between the background and dark bodies, and between dark and bright.
            self.brightness.bias.copy_(torch.tensor([-5.75, -2.25]))
            self.bands.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 1.0]])[:, :, None, None])
            self.blur.weight.copy_(_gaussian_kernel(_BLUR_SIGMA, radius).expand(5, 1, -1, -1))
        for parameter in self.parameters():
            parameter.requires_grad_(False)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = torch.relu(self.chroma(frames))
        bands = self.bands(torch.clamp(self.brightness(frames), 0.0, 1.0))
        maps = self.blur(torch.cat([parts, bands], dim=1))
        return maps[:, :3], torch.clamp(maps[:, 3:], 0.0, 1.0)



class CentroidHead(nn.Module):
    """The thorax map of :class:`DemoHead` as a centroid head: ``frames (Tensor[S, 3, H,
    W])`` → ``Tensor[S, 1, h, w]`` (stride 2), one peak on each animal's centre."""

    def __init__(self) -> None:
        super().__init__()
        self.head = DemoHead()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(frames)[0][:, 1:2]


class InstanceHead(nn.Module):
    """:class:`DemoHead` on crops: ``crops (Tensor[n, 3, h, w])`` → ``(confmaps
    (Tensor[n, 3, h / 2, w / 2]), class_probs (Tensor[n, 2]))``. The class vector is the
    class maps at the crop's centre (the animal's thorax), normalised to sum to 1: the
    instance head of a multi-class top-down model. A crop has maps of every animal in
    it; the top-down pipeline keeps each part's global maximum, the animal nearest
    the centre when animals are apart."""

    def __init__(self) -> None:
        super().__init__()
        self.head = DemoHead()

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        confmaps, class_maps = self.head(crops)
        centre = class_maps[:, :, class_maps.shape[2] // 2, class_maps.shape[3] // 2]
        return confmaps, centre / centre.sum(dim=1, keepdim=True).clamp_min(1e-6)


def render_frame(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic frame with two animals (one of each class) at known keypoints.

    Returns:
        frame (float32[3, H, W]): RGB in [0, 1].
        keypoints (float64[2, 3, 2]): ``(x, y)`` in image pixels per animal and part.
        classes (int64[2]): class of each animal (0 bright, 1 dark), in animal order.
    """
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    grey = np.full((height, width), _BACKGROUND)
    colour = np.zeros((3, height, width))
    slot = width / 2
    half = 0.3 * min(slot, height)  # half body length
    classes = rng.permutation(2)
    keypoints = np.zeros((2, 3, 2))
    for animal in range(2):
        centre = np.array([slot * (animal + 0.5), height / 2.0])
        centre += rng.uniform(-0.1, 0.1, 2) * np.array([slot, height])
        angle = rng.uniform(0, 2 * math.pi)
        axis = np.array([math.cos(angle), math.sin(angle)])
        keypoints[animal] = [centre + half * axis, centre, centre - half * axis]
        # Body: a soft-edged ellipse along the axis.
        along = (xs - centre[0]) * axis[0] + (ys - centre[1]) * axis[1]
        across = -(xs - centre[0]) * axis[1] + (ys - centre[1]) * axis[0]
        radius = np.sqrt((along / (half + 4)) ** 2 + (across / (0.35 * half + 2)) ** 2)
        body = np.clip((1.15 - radius) / 0.3, 0.0, 1.0)
        grey += body * (_BODY_BRIGHTNESS[classes[animal]] - _BACKGROUND)
        for part, (kx, ky) in enumerate(keypoints[animal]):
            bump = _MARKER_AMPLITUDE * np.exp(
                -((xs - kx) ** 2 + (ys - ky) ** 2) / (2 * _MARKER_SIGMA**2)
            )
            colour -= bump / 2
            colour[part] += 1.5 * bump
    frame = grey[None] + colour + rng.normal(0.0, 0.01, (3, height, width))
    return np.clip(frame, 0.0, 1.0).astype(np.float32), keypoints, classes


def frames_batch(sizes: list[tuple[int, int]], batch: int, seed: int = 0):
    """``batch`` frames per ``(H, W)`` in ``sizes``: a list of ``(frames, keypoints, classes)``."""
    out = []
    for i, (height, width) in enumerate(sizes):
        rendered = [render_frame(height, width, seed + 100 * i + b) for b in range(batch)]
        out.append(tuple(np.stack(parts) for parts in zip(*rendered, strict=True)))
    return out
