"""Peak-layer settings from the command line: validated once, turned into modules and metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from torch import nn

import peaklayers
from peaklayers.ops.class_maps import ClassMapLookup

from .common import ToolError

LAYERS = ("global", "local", "topk")
REFINEMENTS = ("integral", "none")

# Output names and, per output, its shape after the batch axis ("C" channels, "K" slots,
# "N" a data-dependent count: local peaks have no batch axis) and dtype ("vals" follows
# the input dtype).
OUTPUTS = {
    "global": [("points", ("C", 2), "float32"), ("vals", ("C",), "input")],
    "local": [("points", ("N", 2), "float32"), ("vals", ("N",), "input"),
              ("sample_inds", ("N",), "int32"), ("channel_inds", ("N",), "int32")],
    "topk": [("points", ("C", "K", 2), "float32"), ("vals", ("C", "K"), "input"),
             ("valid", ("C", "K"), "bool")],
}
CLASS_PROBS = {"local": ("class_probs", ("N", "classes"), "input"),
               "topk": ("class_probs", ("C", "K", "classes"), "input")}


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
        if class_maps and layer == "global":
            raise ToolError("--class-maps needs --layer local or topk (identity grouping works "
                            "on every peak of a part, not one per map)")
        settings = cls(layer, k, float(threshold), refinement, patch_size,
                       float(default_stride if stride is None else stride), class_maps)
        settings.build()  # the library validates the rest (k, patch size, stride)
        return settings

    def build(self) -> nn.Module:
        refinement = None if self.refinement == "none" else self.refinement
        common = dict(threshold=self.threshold, refinement=refinement,
                      patch_size=self.patch_size, stride=self.stride)
        try:
            if self.layer == "global":
                return peaklayers.GlobalPeaks(**common)
            if self.layer == "local":
                return peaklayers.LocalPeaks(**common)
            return peaklayers.TopKPeaks(self.k, **common)
        except (ValueError, TypeError) as error:
            raise ToolError(str(error).replace("patch_size", "--patch-size")) from None

    def lookup(self) -> ClassMapLookup:
        return ClassMapLookup(stride=self.stride)

    def outputs(self) -> list[tuple[str, tuple, str]]:
        outputs = list(OUTPUTS[self.layer])
        if self.class_maps:
            outputs.append(CLASS_PROBS[self.layer])
        return outputs

    def output_names(self) -> list[str]:
        return [name for name, _, _ in self.outputs()]

    def as_dict(self) -> dict:
        settings = asdict(self)
        if self.layer != "topk":
            settings.pop("k")
        return settings
