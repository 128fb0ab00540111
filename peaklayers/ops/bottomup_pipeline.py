"""Multi-class bottom-up in one graph: frames in, top-K peaks and their class probabilities
out (SPEC §3.1 step 1, §5.1).

Frames → :meth:`~.pipelines.Pipeline.prepare` → head (confidence maps and class maps) →
:func:`~.topk_peaks.topk_peaks` per part → :func:`~.class_maps.class_probabilities` at
each peak → frame pixels. The grouping of peaks into identities (§3.1 steps 2-4) runs on
the host: :func:`peaklayers.serving.pipelines.assign_peak_classes`.
"""

from typing import Optional

import torch
from torch import nn

from ._checks import python_float, python_int
from .class_maps import class_probabilities
from .pipelines import Pipeline, Selector, _check_maps, _positive_stride, _two_outputs
from .topk_peaks import topk_peaks


def _max_peaks(value: object) -> int:
    count = python_int(value, "max_peaks")
    if count < 1 or count > 4095:
        # 4095: the top-K layer's limit (its slot keys must be exact in float32).
        raise ValueError("max_peaks must be from 1 to 4095, got " + str(count))
    return count


def _check_class_maps(class_maps: torch.Tensor, maps: torch.Tensor) -> None:
    if (class_maps.dim() != 4 or not class_maps.is_floating_point()
            or class_maps.shape[0] != maps.shape[0] or class_maps.shape[1] < 1):
        raise ValueError(
            "head's class output (class_output) must be floating-point class maps (samples, "
            "classes, height, width) with at least one class and the "
            + str(maps.shape[0]) + " samples of the confidence maps, got "
            + str(class_maps.dtype) + " of shape " + str(class_maps.shape)
        )


class MultiClassBottomUpPipeline(Pipeline):
    """Frames → head → top-K peaks per part and their class probabilities (SPEC §3.1, §5).

    Args:
        head (nn.Module): float32 ``[0, 1]`` images ``(S, C, H', W')`` → confidence maps
            ``(S, N, h, w)`` and class maps ``(S, K, h_c, w_c)``, as a tuple (``maps_output``
            and ``class_output`` are indices, default 0 and 1) or a dict (both keys).
        max_peaks (int): slots per part (1 to 4095): at most this many peaks of each part
            are kept, the highest first (:func:`~.topk_peaks.topk_peaks`).
        stride (float): the confidence maps' output stride ``t``.
        class_stride (float, optional): the class maps' output stride (default ``stride``).
        input_scale (float), max_stride (int): frame settings (see
            :func:`~.frames.prepare_frames`).
        threshold (float), refinement (str or None), patch_size (int): as
            :func:`~.topk_peaks.topk_peaks` (peaks strictly above ``threshold``).
        maps_output, class_output (int or str): where the two maps are in the head's output.

    ``forward(image (Tensor[S, C, H, W], uint8 or float32 [0, 1]))`` returns ``peaks
    (Tensor[S, N, P, 2], float32)`` in frame pixels (NaN in empty slots), ``peak_vals
    (Tensor[S, N, P])`` (dtype of the maps, 0 in empty slots), ``peak_valid (Tensor[S, N,
    P], bool)`` and ``class_probs (Tensor[S, N, P, K], float32)``: the class maps at each
    peak (nearest class-map pixel, SPEC §3.1 step 1), 0 in empty slots. ``P`` is
    ``max_peaks``; slots are ordered by value descending, ties by position.
    """

    output_names = ("peaks", "peak_vals", "peak_valid", "class_probs")
    kind = "multi_class_bottomup"

    def __init__(self, head: nn.Module, max_peaks: int, stride: float = 1.0,
                 class_stride: Optional[float] = None, input_scale: float = 1.0,
                 max_stride: int = 1, threshold: float = 0.2,
                 refinement: Optional[str] = "integral", patch_size: int = 5,
                 maps_output: Selector = 0, class_output: Selector = 1) -> None:
        super().__init__(input_scale, max_stride, threshold, refinement, patch_size)
        self.head = _two_outputs(head, maps_output, class_output, "head", "maps_output")
        self.max_peaks = _max_peaks(max_peaks)
        self.stride = _positive_stride(stride, "stride")
        self.class_stride = (self.stride if class_stride is None
                             else _positive_stride(class_stride, "class_stride"))
        # Peaks are found in confidence-map pixels; this takes them to class-map pixels
        # (exactly 1, no division, when the two strides are equal).
        self.lookup_stride = python_float(self.class_stride / self.stride, "class_stride")

    def peaks_and_classes(self, maps: torch.Tensor, class_maps: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """Stage: the head's confidence maps ``(S, N, h, w)`` and class maps ``(S, K, h_c,
        w_c)`` → ``(peaks, peak_vals, peak_valid, class_probs)`` as ``forward`` returns
        them."""
        _check_maps(maps, "head")
        _check_class_maps(class_maps, maps)
        points, vals, valid = topk_peaks(maps, self.max_peaks, self.threshold,
                                         self.refinement, self.patch_size)
        probs = class_probabilities(class_maps, points, None, self.lookup_stride)
        probs = torch.where(valid[:, :, :, None], probs.to(torch.float32),
                            torch.zeros_like(probs, dtype=torch.float32))
        factor = self._frame_stride(self.stride)
        if factor != 1.0:  # NaN in empty slots stays NaN
            points = points * factor
        return points, vals, valid, probs

    def forward(self, image: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        maps, class_maps = self.head(self.prepare(image))
        return self.peaks_and_classes(maps, class_maps)

    def extra_repr(self) -> str:
        return (
            f"max_peaks={self.max_peaks}, stride={self.stride:g}, "
            f"class_stride={self.class_stride:g}, " + super().extra_repr()
        )
