"""Exportable peak finding, sub-pixel refinement and identity layers for pose models.

Three tiers, each a subpackage (see SPEC.md, shared with the project, for the behaviour):

- :mod:`peaklayers.ops`: the graph ops, pure torch, imported here;
- :mod:`peaklayers.exporting`: :func:`export_onnx`, :func:`export_program` (onnx);
- :mod:`peaklayers.serving`: ONNX Runtime sessions and host-side identity grouping
  (onnxruntime, numpy, scipy), public as :mod:`peaklayers.runtime` and
  :mod:`peaklayers.identity`.

``import peaklayers`` loads torch and the ops only; the other tiers load when first used.
"""

import importlib
from typing import Any

from . import functional
from .ops.bottomup_pipeline import MultiClassBottomUpPipeline
from .ops.class_maps import ClassMapLookup, class_probabilities
from .ops.crops import CentredCrops, centred_crops
from .ops.frames import PrepareFrames, prepare_frames, to_frame_pixels
from .ops.global_peaks import GlobalPeaks, global_peaks
from .ops.integral import integral_offsets
from .ops.local_peaks import LocalPeaks, local_peaks
from .ops.nms import strict_maxima, strict_maxima_mask
from .ops.outputs import Output
from .ops.peaks_with_classes import PeaksWithClasses
from .ops.pipelines import (
    CentroidPipeline,
    MultiClassTopDownPipeline,
    Pipeline,
    SingleInstancePipeline,
    TopDownPipeline,
)
from .ops.topk_peaks import TopKPeaks, topk_peaks

__version__ = "0.1.0"

# Attributes loaded on first use: name -> module that defines it.
_LAZY = {
    "export_onnx": ".exporting",
    "export_program": ".exporting",
    "export_sleap_nn": ".exporting.sleap_nn",
    "assign_instance_classes": ".serving.pipelines",
    "assign_peak_classes": ".serving.pipelines",
    "output_names_for": ".exporting",
    "PeakSession": ".serving.runtime",
    "ProviderUnavailableError": ".serving.runtime",
    "open_session": ".serving.runtime",
    "identity": ".identity",
    "runtime": ".runtime",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'peaklayers' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name], __name__)
    value = module if name in ("identity", "runtime") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CentredCrops",
    "CentroidPipeline",
    "ClassMapLookup",
    "GlobalPeaks",
    "LocalPeaks",
    "MultiClassBottomUpPipeline",
    "MultiClassTopDownPipeline",
    "Output",
    "PeakSession",
    "PeaksWithClasses",
    "Pipeline",
    "PrepareFrames",
    "ProviderUnavailableError",
    "SingleInstancePipeline",
    "TopDownPipeline",
    "TopKPeaks",
    "assign_instance_classes",
    "assign_peak_classes",
    "centred_crops",
    "class_probabilities",
    "export_onnx",
    "export_program",
    "export_sleap_nn",
    "functional",
    "global_peaks",
    "identity",
    "integral_offsets",
    "local_peaks",
    "open_session",
    "output_names_for",
    "prepare_frames",
    "strict_maxima",
    "strict_maxima_mask",
    "to_frame_pixels",
    "topk_peaks",
]
