"""Put a confidence-map head and the chosen peak layer (and class-map lookup) in one module.

Only composition lives here; the peak finding and the lookup are the library's modules.
Each wrapper is scriptable: TorchScript needs the head's output type fixed, so there is
one small class per case. A head that returns a tuple gives its confidence maps first and,
with ``--class-maps``, its class maps second.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ToolError
from .settings import LayerSettings


class HeadThenPeaks(nn.Module):
    """``head(x) -> cms`` then ``layer(cms)``."""

    def __init__(self, head: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.layer = layer

    def forward(self, x: torch.Tensor):
        return self.layer(self.head(x))


class FirstOfHeadThenPeaks(HeadThenPeaks):
    """``head(x) -> (cms, ...)`` then ``layer(cms)``."""

    def forward(self, x: torch.Tensor):
        return self.layer(self.head(x)[0])


class HeadThenLocalPeaksAndClasses(nn.Module):
    """``head(x) -> (cms, class_maps)``, local peaks, and each peak's class probabilities."""

    def __init__(self, head: nn.Module, layer: nn.Module, lookup: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.layer = layer
        self.lookup = lookup

    def forward(self, x: torch.Tensor):
        maps = self.head(x)
        points, vals, sample_inds, channel_inds = self.layer(maps[0])
        return points, vals, sample_inds, channel_inds, self.lookup(maps[1], points, sample_inds)


class HeadThenTopKPeaksAndClasses(HeadThenLocalPeaksAndClasses):
    """``head(x) -> (cms, class_maps)``, top-K peaks, and each slot's class probabilities."""

    def forward(self, x: torch.Tensor):
        maps = self.head(x)
        points, vals, valid = self.layer(maps[0])
        return points, vals, valid, self.lookup(maps[1], points, None)


def head_outputs(head: nn.Module, example: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], bool]:
    """Run the head once: its outputs as a tuple (the first a 4-D map), and if it was a tuple."""
    try:
        with torch.no_grad():
            out = head(example)
    except Exception as error:  # the user's model refused the example input
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ToolError(f"the model failed on an input of shape {tuple(example.shape)}: {first} "
                        "(check --input-shape)") from None
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise ToolError("the model must return a tensor or a tuple of tensors")
    if outs[0].dim() != 4:
        raise ToolError("the model's output must be a 4-D confidence map (S, C, H, W), got shape "
                        f"{tuple(outs[0].shape)}")
    return outs, isinstance(out, (tuple, list))


def compose(head: nn.Module, settings: LayerSettings, head_returns_tuple: bool,
            n_outputs: int = 1) -> nn.Module:
    """The head followed by the peak layer (and the class-map lookup with ``--class-maps``)."""
    layer = settings.build()
    if not settings.class_maps:
        return (FirstOfHeadThenPeaks if head_returns_tuple else HeadThenPeaks)(head, layer)
    if not head_returns_tuple or n_outputs < 2:
        raise ToolError("--class-maps needs a model that returns (confidence maps, class maps)")
    cls = HeadThenLocalPeaksAndClasses if settings.layer == "local" else HeadThenTopKPeaksAndClasses
    # No .eval(): a loaded .pt2 head refuses it (its mode is fixed); the head's mode is
    # set where it is loaded, and the peak layer and lookup do not depend on it.
    return cls(head, layer, settings.lookup())
