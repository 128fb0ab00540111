"""Peak-layer settings from the command line: validated once, turned into the library's modules.

What the built module returns (names, axes, dtypes) is the library's own description
(``module.outputs``); nothing here restates it.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Optional

from torch import nn

import peaklayers
from peaklayers.ops._checks import REFINEMENTS as _LIBRARY_REFINEMENTS
from peaklayers.ops.outputs import Output

from .common import ToolError

# The --layer words and the layer each one builds.
LAYERS = {"global": peaklayers.GlobalPeaks, "local": peaklayers.LocalPeaks,
          "topk": peaklayers.TopKPeaks}
# A sanity bound on --stride: heads have output strides of 1 to 64; far larger ones turn
# float32 points into inf.
MAX_STRIDE = 65536.0
# The library's refinements, with None spelled "none" on the command line.
REFINEMENTS = tuple("none" if r is None else r for r in _LIBRARY_REFINEMENTS)


def _takes_k(layer: str) -> bool:
    return "k" in inspect.signature(LAYERS[layer]).parameters


@dataclass(frozen=True)
class LayerSettings:
    """What ``--layer --k --threshold --refinement --patch-size --stride --class-maps`` asked."""

    layer: str = "local"
    k: int = 8
    threshold: float = 0.2
    refinement: str = "integral"
    patch_size: int = 5
    stride: float = 1.0
    class_maps: bool = False

    @classmethod
    def from_args(cls, layer: str, k: int, threshold: float, refinement: str, patch_size: int,
                  stride: Optional[float], class_maps: bool, force: bool,
                  default_stride: float = 1.0) -> LayerSettings:
        if not 0.0 <= threshold <= 1.0 and not force:
            raise ToolError(f"--threshold must be in [0, 1] for confidence maps, got {threshold} "
                            "(add --force if your maps are not probabilities)")
        if stride is not None and not stride <= MAX_STRIDE:
            raise ToolError(f"--stride must be at most {MAX_STRIDE:g} (points are float32 "
                            f"pixels; a larger stride overflows them), got {stride:g}")
        settings = cls(layer, k, float(threshold), refinement, patch_size,
                       float(default_stride if stride is None else stride), class_maps)
        settings.build()  # the library validates the rest (k, patch size, stride, class maps)
        return settings

    def build(self) -> nn.Module:
        """The peak layer, or with ``--class-maps`` the layer and its class-map lookup
        (:class:`peaklayers.PeaksWithClasses`, inputs ``(confmaps, class_maps)``)."""
        options = dict(threshold=self.threshold,
                       refinement=None if self.refinement == "none" else self.refinement,
                       patch_size=self.patch_size, stride=self.stride)
        if _takes_k(self.layer):
            options["k"] = self.k
        try:
            layer = LAYERS[self.layer](**options)
        except (ValueError, TypeError) as error:
            raise ToolError(str(error).replace("patch_size", "--patch-size")) from None
        if not self.class_maps:
            return layer
        try:
            return peaklayers.PeaksWithClasses(layer)
        except TypeError as error:
            raise ToolError(f"--class-maps with --layer {self.layer}: {error}") from None

    def outputs(self) -> tuple[Output, ...]:
        return self.build().outputs

    def output_names(self) -> list[str]:
        return [output.name for output in self.outputs()]

    def as_dict(self) -> dict:
        settings = asdict(self)
        if not _takes_k(self.layer):
            settings.pop("k")
        return settings
