"""Peaks, then each peak's class probabilities: one module for bottom-up identity graphs.

The composition every class-map graph uses (SPEC §3.1 step 1): a :class:`LocalPeaks` or
:class:`TopKPeaks` layer on the confidence maps, then :class:`ClassMapLookup` on the
class maps at the points it found. The host-side assignment follows in
:mod:`peaklayers.identity`.
"""

from typing import Optional, Union

import torch
from torch import nn

from .class_maps import ClassMapLookup
from .local_peaks import LocalPeaks
from .outputs import Output
from .topk_peaks import TopKPeaks


class PeaksWithClasses(nn.Module):
    """``forward(cms, class_maps)``: the peak layer's outputs, then ``class_probs``.

    Args:
        layer (LocalPeaks or TopKPeaks): finds the peaks. Global peaks are refused:
            identity grouping needs every peak of a part, not one per map.
        lookup (ClassMapLookup, optional): default ``ClassMapLookup(stride=layer.stride)``,
            for class maps at the resolution of the confidence maps.

    ``forward(cms (Tensor[S, C, H, W]), class_maps (Tensor[S, K, H', W']))`` returns the
    layer's outputs followed by ``class_probs``: ``Tensor[N, K]`` after local peaks
    (one row per peak), ``Tensor[S, C, k, K]`` after top-K peaks, dtype of
    ``class_maps``, NaN rows for missing points. :attr:`outputs` describes them.
    """

    __jit_unused_properties__ = ["outputs"]

    def __init__(
        self, layer: Union[LocalPeaks, TopKPeaks], lookup: Optional[ClassMapLookup] = None
    ) -> None:
        super().__init__()
        if not isinstance(layer, (LocalPeaks, TopKPeaks)):
            raise TypeError(
                "layer must be a LocalPeaks or TopKPeaks (identity grouping needs every peak "
                "of a part), got " + type(layer).__name__
            )
        if lookup is not None and not isinstance(lookup, ClassMapLookup):
            raise TypeError("lookup must be a ClassMapLookup, got " + type(lookup).__name__)
        self.layer = layer
        self.lookup = lookup if lookup is not None else ClassMapLookup(stride=layer.stride)
        # Variable-length peaks say their sample in an output; top-K slots by position.
        self.has_sample_inds = layer.outputs[0].axes[0] == "peaks"

    @property
    def outputs(self) -> tuple[Output, ...]:
        """The layer's outputs, then ``class_probs`` (one row of classes per point)."""
        points = self.layer.outputs[0]
        return (*self.layer.outputs, Output("class_probs", (*points.axes[:-1], "classes"), "maps"))

    def forward(self, cms: torch.Tensor, class_maps: torch.Tensor):
        found = self.layer(cms)
        sample_inds: Optional[torch.Tensor] = found[2] if self.has_sample_inds else None
        return found + (self.lookup(class_maps, found[0], sample_inds),)
