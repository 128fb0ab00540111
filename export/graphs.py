"""Put a confidence-map head and the peak module in one module.

Only composition lives here; the peak finding and the class-map lookup are the library's
modules (:class:`peaklayers.PeaksWithClasses` for class maps). Each wrapper is
scriptable: TorchScript needs the head's output type fixed, so there is one small class
per form of head output. A head that returns a tuple gives its confidence maps first and,
with ``--class-maps``, its class maps second.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import ToolError, first_line
from .settings import LayerSettings


class HeadThenPeaks(nn.Module):
    """``head(x) -> cms`` then ``peaks(cms)``."""

    def __init__(self, head: nn.Module, peaks: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.peaks = peaks

    def forward(self, x: torch.Tensor):
        return self.peaks(self.head(x))


class FirstOfHeadThenPeaks(HeadThenPeaks):
    """``head(x) -> (cms, ...)`` then ``peaks(cms)``."""

    def forward(self, x: torch.Tensor):
        return self.peaks(self.head(x)[0])


class HeadThenPeaksWithClasses(HeadThenPeaks):
    """``head(x) -> (cms, class_maps)`` then ``peaks(cms, class_maps)``."""

    def forward(self, x: torch.Tensor):
        maps = self.head(x)
        return self.peaks(maps[0], maps[1])


def head_outputs(head: nn.Module, example: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], bool]:
    """Run the head once: its outputs as a tuple (the first a 4-D map), and if it was a tuple."""
    try:
        with torch.no_grad():
            out = head(example)
    except Exception as error:  # only the user's code runs here, and it may raise anything
        raise ToolError(f"the model failed on an input of shape {tuple(example.shape)}: "
                        f"{first_line(error)} (check --input-shape)") from None
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
        raise ToolError("the model must return a tensor or a tuple of tensors")
    if outs[0].dim() != 4:
        raise ToolError("the model's output must be a 4-D confidence map (S, C, H, W), got shape "
                        f"{tuple(outs[0].shape)}")
    return outs, isinstance(out, (tuple, list))


def compose(head: nn.Module, settings: LayerSettings, head_returns_tuple: bool,
            n_outputs: int = 1) -> nn.Module:
    """The head followed by the peak module (the peak layer, and the class-map lookup with
    ``--class-maps``)."""
    # No .eval(): a loaded .pt2 head refuses it (its mode is fixed); the head's mode is
    # set where it is loaded, and the peak layer and lookup do not depend on it.
    peaks = settings.build()
    if not settings.class_maps:
        return (FirstOfHeadThenPeaks if head_returns_tuple else HeadThenPeaks)(head, peaks)
    if not head_returns_tuple or n_outputs < 2:
        raise ToolError("--class-maps needs a model that returns (confidence maps, class maps)")
    return HeadThenPeaksWithClasses(head, peaks)
