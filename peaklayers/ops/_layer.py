"""Settings shared by the three peak layers: validated once, at construction."""

from typing import Final, Optional

from torch import nn

from ._checks import (
    check_flat_tops,
    check_patch_size,
    check_refinement,
    check_stride,
    check_threshold,
    python_float,
    python_int,
)


class PeakLayer(nn.Module):
    """Base of :class:`GlobalPeaks`, :class:`LocalPeaks` and :class:`TopKPeaks`.

    Holds ``threshold``, ``refinement``, ``patch_size`` and ``stride`` as plain
    attributes (TorchScript turns them into constants of the graph).
    """

    refinement: Optional[str]

    def __init__(
        self,
        threshold: float = 0.2,
        refinement: Optional[str] = "integral",
        patch_size: int = 5,
        stride: float = 1.0,
    ) -> None:
        super().__init__()
        self.threshold = python_float(threshold, "threshold")
        check_threshold(self.threshold)
        check_refinement(refinement)
        self.refinement = refinement
        self.patch_size = python_int(patch_size, "patch_size")
        check_patch_size(self.patch_size)
        self.stride = python_float(stride, "stride")
        check_stride(self.stride)

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, refinement={self.refinement!r}, "
            f"patch_size={self.patch_size}, stride={self.stride:g}"
        )


class LocalPeakLayer(PeakLayer):
    """Base of :class:`LocalPeaks` and :class:`TopKPeaks`: adds ``flat_tops``.

    ``for_graph`` is set by :func:`~peaklayers.export_onnx` while it scripts a model for
    the TorchScript-based exporter. Scripted code then keeps only the paths a graph can
    hold: no loops, no booleans packed into bytes, no tests of the device. The flag is a
    constant of the scripted code, so the other paths are dropped from it.
    """

    for_graph: Final[bool]

    def __init__(
        self,
        threshold: float = 0.2,
        refinement: Optional[str] = "integral",
        patch_size: int = 5,
        stride: float = 1.0,
        flat_tops: str = "drop",
    ) -> None:
        super().__init__(threshold, refinement, patch_size, stride)
        check_flat_tops(flat_tops)
        self.flat_tops = flat_tops
        self.for_graph = False

    def extra_repr(self) -> str:
        return super().extra_repr() + f", flat_tops={self.flat_tops!r}"
