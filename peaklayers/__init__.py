"""Exportable peak finding, sub-pixel refinement and identity layers for pose models.

See SPEC.md (shared with the project) for the behaviour every layer is held to.
"""

from . import functional, identity
from .class_maps import ClassMapLookup, class_probabilities
from .exporting import export_onnx, export_program, output_names_for
from .global_peaks import GlobalPeaks, global_peaks
from .integral import integral_offsets
from .local_peaks import LocalPeaks, local_peaks
from .nms import strict_maxima, strict_maxima_mask
from .runtime import PeakSession, ProviderUnavailableError, open_session
from .topk_peaks import TopKPeaks, topk_peaks

__version__ = "0.1.0"

__all__ = [
    "ClassMapLookup",
    "GlobalPeaks",
    "LocalPeaks",
    "PeakSession",
    "ProviderUnavailableError",
    "TopKPeaks",
    "class_probabilities",
    "export_onnx",
    "export_program",
    "functional",
    "global_peaks",
    "identity",
    "integral_offsets",
    "local_peaks",
    "open_session",
    "output_names_for",
    "strict_maxima",
    "strict_maxima_mask",
    "topk_peaks",
]
