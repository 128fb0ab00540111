"""Synthetic heads for the pipeline tests: their peaks are known.

Frames hold Gaussian blobs (one per animal, body parts as smaller blobs around it); the
heads are fixed convolutions (a Gaussian blur, per-channel shifted copies), so the maps
peak where the blobs are and every backend computes the same maps to float rounding.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

PARTS = ((0, 0), (3, -2), (-2, 3))  # body-part offsets from an animal's centre, pixels


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    g = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * sigma**2))
    return k / k.sum()


class Blur(nn.Module):
    """A fixed Gaussian blur of the image's mean channel: one-channel maps, same size
    (stride 1), or average-pooled by ``stride``."""

    def __init__(self, stride: int = 1, sigma: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", _gaussian_kernel(5, sigma)[None, None])
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=1, keepdim=True)
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        return F.conv2d(x, self.kernel, padding=2)


class Parts(nn.Module):
    """``len(PARTS)`` channels: channel n is the blurred image plus half of it shifted by
    the n-th part offset, so it peaks at an animal's n-th part (the part's own blob plus
    half the brighter centre blob)."""

    def __init__(self):
        super().__init__()
        kernel = torch.zeros(len(PARTS), 1, 13, 13)
        blur = _gaussian_kernel(5, 1.0)
        for n, (dx, dy) in enumerate(PARTS):
            kernel[n, 0, 4:9, 4:9] += blur
            # conv2d reads x(p + k - 6): the copy centred at k = 6 - d reads x(p - d).
            kernel[n, 0, 4 - dy:9 - dy, 4 - dx:9 - dx] += 0.5 * blur
        self.register_buffer("kernel", kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _part_maps(x, self.kernel)


def _part_maps(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x.mean(dim=1, keepdim=True), kernel, padding=6)


class PartsTuple(Parts):
    """:class:`Parts` returning ``(half the maps, the maps)``: the maps at index 1."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = _part_maps(x, self.kernel)
        return maps * 0.5, maps


class PartsClasses(Parts):
    """:class:`Parts` returning ``{"maps": maps, "classes": probabilities (S, K)}``; class
    k's score is the mean of the k-th band of rows of the crop (a fixed function of it)."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.classes = classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = _part_maps(x, self.kernel)
        height = x.shape[2]
        bands = [x[:, :, height * k // self.classes:height * (k + 1) // self.classes].mean(
            dim=(1, 2, 3)) for k in range(self.classes)]
        return {"maps": maps, "classes": torch.softmax(torch.stack(bands, dim=1) * 50.0, dim=1)}


def frames(samples: int, height: int, width: int, animals, seed: int = 0,
           channels: int = 1, parts: bool = True) -> torch.Tensor:
    """uint8 frames with one bright blob per animal (sub-pixel centres) and dimmer blobs
    at its parts (unless ``parts`` is False). ``animals[s]`` lists ``(x, y)`` centres of
    sample ``s``."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    out = torch.zeros(samples, channels, height, width)
    for s in range(samples):
        for index, (cx, cy) in enumerate(animals[s]):
            amp = 1.0 - 0.15 * index
            for n, (dx, dy) in enumerate(PARTS if parts else PARTS[:1]):
                a = amp * (1.0 if n == 0 else 0.6)
                r2 = (xs - cx - dx) ** 2 + (ys - cy - dy) ** 2
                out[s] = torch.maximum(out[s], a * torch.exp(-r2 / (2 * 2.5**2)))
    noise = torch.rand(out.shape, generator=gen) * 0.02
    return ((out + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def animals_for(samples: int, height: int, width: int, count: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(samples):
        centres = []
        while len(centres) < count:
            x = 6 + float(torch.rand((), generator=gen)) * (width - 12)
            y = 6 + float(torch.rand((), generator=gen)) * (height - 12)
            if all(math.hypot(x - a, y - b) > 12 for a, b in centres):
                centres.append((x, y))
        out.append(centres)
    return out


class PartsClassMaps(Parts):
    """Bottom-up multi-class head: :class:`Parts` maps (after average pooling by ``stride``)
    and ``classes`` class maps at ``class_stride``, returned as ``(maps, class_maps)`` or,
    with ``keys``, as a dict under those two keys.

    The class maps depend on the position only: class k is most probable in the k-th of
    ``classes`` vertical bands of the frame (a softmax of each band's distance, tilted a
    little by the row), so an animal's class is known from where it is drawn. The band
    edges are moved off pixel centres so that no pixel has two equally probable classes.
    """

    def __init__(self, stride: int = 1, class_stride: int = 1, classes: int = 2,
                 keys: Optional[tuple[str, str]] = None):
        super().__init__()
        self.stride = stride
        self.class_stride = class_stride
        self.classes = classes
        self.keys = keys if keys is not None else ("", "")

    def _class_maps(self, x: torch.Tensor) -> torch.Tensor:
        image = x.mean(dim=1, keepdim=True)
        # Positions from the input's sizes, so every exporter keeps them dynamic (a cumsum
        # of ones instead leaves torch.export guards on the padded frame size).
        height, width = image.shape[2], image.shape[3]
        columns = torch.arange(width, dtype=image.dtype, device=image.device)
        rows = torch.arange(height, dtype=image.dtype, device=image.device)[:, None]
        across = (columns + 0.63) / width + image * 0.0
        down = (rows + 1.0) / height
        # The row term keeps two peaks in one column from having equal probabilities.
        logits = torch.cat([-12.0 * (across - (k + 0.5) / self.classes).abs() + 0.5 * k * down
                            for k in range(self.classes)], dim=1)
        if self.class_stride > 1:
            logits = F.avg_pool2d(logits, self.class_stride)
        return torch.softmax(logits, dim=1)

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = F.avg_pool2d(x, self.stride) if self.stride > 1 else x
        return _part_maps(pooled, self.kernel), self._class_maps(x)


class PartsClassMapsTuple(PartsClassMaps):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.both(x)


class PartsClassMapsDict(PartsClassMaps):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps, class_maps = self.both(x)
        return {self.keys[0]: maps, self.keys[1]: class_maps}
