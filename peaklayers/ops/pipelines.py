"""Whole pipelines in one graph: frames in, frame-pixel points out (SPEC §5.2-§5.4).

Each pipeline composes the user's head(s) with the graph ops: :func:`~.frames.prepare_frames`
→ head → peaks (:func:`~.global_peaks.global_peaks` or :func:`~.topk_peaks.topk_peaks`) →
frame pixels; top-down adds :func:`~.crops.centred_crops` and a second head on every crop.
Only the model constants (channels, crop size, ``max_instances``) are fixed; batch and
frame size are read from the input inside the graph.

A head takes float32 images in ``[0, 1]`` and returns its maps as a tensor, or inside a
tuple (``*_output`` = the index) or a dict (``*_output`` = the key). The multi-class
instance head returns maps and class vectors (``instance_output`` and ``class_output``).

Every pipeline scripts (with scriptable heads), traces, exports with ``torch.export`` and
both ONNX exporters; :attr:`Pipeline.output_names` names its outputs in order.

``forward`` is a chain of stage methods around the heads (``prepare``; ``find_peaks`` or
``find_centroids``; ``centroids_and_crops``, then ``instance_peaks`` or
``instance_peaks_and_classes``), so the stages can also be exported on their own and
joined with ONNX heads (:func:`peaklayers.exporting.compose_pipeline`).

Multi-class bottom-up (class maps) is :mod:`.bottomup_pipeline`, on the same base.
"""

import math
from typing import Final, Optional, Union

import torch
from torch import nn

from ._checks import (
    check_k,
    check_patch_size,
    check_refinement,
    check_threshold,
    python_float,
    python_int,
)
from .crops import centred_crops, check_crop_size
from .frames import check_max_stride, normalize_frames, pad_to_stride, resize_frames, scale_fraction
from .global_peaks import global_peaks
from .topk_peaks import topk_peaks

Selector = Optional[Union[int, str]]


# -- picking a head's output --------------------------------------------------------------
# One small module per output form, chosen at construction: TorchScript compiles each for
# its head's return type (a tuple index must be a constant there, hence ``Final``).


def _check_picked(out: object, selector: Selector, name: str) -> None:
    """Eager and tracing only: ``out[selector]`` exists (a head returning the wrong form
    is an error naming the selector, not an IndexError from inside the graph)."""
    if selector is None:
        if not isinstance(out, torch.Tensor):
            raise ValueError(name + " is not set, but the head returns a "
                             + type(out).__name__ + ": say which output holds the maps")
        return
    if isinstance(selector, str):
        if not isinstance(out, dict) or selector not in out:
            keys = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise ValueError(name + "=" + repr(selector) + " is not a key of the head's "
                             "output (" + str(keys) + ")")
        return
    if not isinstance(out, (tuple, list)) or not -len(out) <= selector < len(out):
        form = (str(len(out)) + " outputs" if isinstance(out, (tuple, list))
                else "a " + type(out).__name__)
        raise ValueError(name + "=" + str(selector) + " does not index the head's output ("
                         + form + ")")


class _Whole(nn.Module):
    def __init__(self, head: nn.Module, name: str) -> None:
        super().__init__()
        self.head = head
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        if not torch.jit.is_scripting():
            _check_picked(out, None, self.name)
        return out


class _Indexed(nn.Module):
    index: Final[int]

    def __init__(self, head: nn.Module, index: int, name: str) -> None:
        super().__init__()
        self.head = head
        self.index = index
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        if not torch.jit.is_scripting():
            _check_picked(out, self.index, self.name)
        return out[self.index]


class _Keyed(nn.Module):
    def __init__(self, head: nn.Module, key: str, name: str) -> None:
        super().__init__()
        self.head = head
        self.key = key
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        if not torch.jit.is_scripting():
            _check_picked(out, self.key, self.name)
        return out[self.key]


class _IndexedPair(nn.Module):
    first: Final[int]
    second: Final[int]

    def __init__(self, head: nn.Module, first: int, second: int, names: tuple[str, str]
                 ) -> None:
        super().__init__()
        self.head = head
        self.first = first
        self.second = second
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(x)
        if not torch.jit.is_scripting():
            _check_picked(out, self.first, self.names[0])
            _check_picked(out, self.second, self.names[1])
        return out[self.first], out[self.second]


class _KeyedPair(nn.Module):
    def __init__(self, head: nn.Module, first: str, second: str, names: tuple[str, str]
                 ) -> None:
        super().__init__()
        self.head = head
        self.first = first
        self.second = second
        self.names = names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(x)
        if not torch.jit.is_scripting():
            _check_picked(out, self.first, self.names[0])
            _check_picked(out, self.second, self.names[1])
        return out[self.first], out[self.second]


def _check_head(head: object, name: str) -> nn.Module:
    if not isinstance(head, nn.Module):
        if isinstance(head, torch.export.ExportedProgram):
            return head.module()
        raise TypeError(name + " must be a torch.nn.Module, got " + type(head).__name__)
    return head


def _check_selector(selector: object, name: str) -> None:
    if selector is None or isinstance(selector, str):
        return
    if isinstance(selector, bool) or not isinstance(selector, int):
        raise TypeError(
            name + " must be None (the head returns a tensor), an int (tuple index) or a "
            "str (dict key), got " + type(selector).__name__
        )


def _selector_name(head_name: str) -> str:
    """The argument that picks a head's output: ``head`` → ``head_output``,
    ``centroid_head`` → ``centroid_output``."""
    return head_name.replace("_head", "") + "_output"


def _one_output(head: object, selector: Selector, name: str) -> nn.Module:
    module = _check_head(head, name)
    selector_name = _selector_name(name)
    _check_selector(selector, selector_name)
    if selector is None:
        return _Whole(module, selector_name)
    if isinstance(selector, str):
        return _Keyed(module, selector, selector_name)
    return _Indexed(module, selector, selector_name)


def _two_outputs(head: object, first: Selector, second: Selector, name: str,
                 first_name: str = "instance_output") -> nn.Module:
    module = _check_head(head, name)
    _check_selector(first, first_name)
    _check_selector(second, "class_output")
    names = (first_name, "class_output")
    if isinstance(first, int) and isinstance(second, int):
        return _IndexedPair(module, first, second, names)
    if isinstance(first, str) and isinstance(second, str):
        return _KeyedPair(module, first, second, names)
    raise TypeError(
        first_name + " and class_output must both be ints (the head returns a tuple) or "
        "both strs (a dict), got " + repr(first) + " and " + repr(second)
    )


def _check_maps(maps: torch.Tensor, name: str) -> None:
    if maps.dim() != 4 or not maps.is_floating_point():
        raise ValueError(
            name + " must return floating-point maps (samples, channels, height, width), "
            "got " + str(maps.dtype) + " of shape " + str(maps.shape)
        )


# -- the pipelines --------------------------------------------------------------------------


class Pipeline(nn.Module):
    """Base of the pipelines: frame settings and output names.

    Attributes:
        output_names (tuple of str): the outputs of ``forward``, in order.
        kind (str): ``single_instance``, ``centroid``, ``topdown``,
            ``multi_class_topdown`` or ``multi_class_bottomup``.
    """

    output_names: tuple[str, ...] = ()
    kind: str = ""
    refinement: Optional[str]

    def __init__(self, input_scale: float, max_stride: int, threshold: float,
                 refinement: Optional[str], patch_size: int) -> None:
        super().__init__()
        self.input_scale = python_float(input_scale, "input_scale")
        self.num, self.den = scale_fraction(self.input_scale)
        self.max_stride = python_int(max_stride, "max_stride")
        check_max_stride(self.max_stride)
        self.threshold = python_float(threshold, "threshold")
        check_threshold(self.threshold)
        check_refinement(refinement)
        self.refinement = refinement
        self.patch_size = python_int(patch_size, "patch_size")
        check_patch_size(self.patch_size)

    def min_frame_size(self) -> int:
        """Smallest frame height and width an export is made for: the frame head's maps
        are at least 2 x 2 (``torch.export`` specialises sizes of 0 and 1)."""
        stride = max(float(getattr(self, "stride", 1.0)),
                     float(getattr(self, "centroid_stride", 1.0)),
                     float(getattr(self, "class_stride", 1.0)), 1.0)
        return max(2, math.ceil((2.0 * stride + 1.0) * self.den / self.num))

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """Stage: frames as the (first) head's input (:func:`~.frames.prepare_frames`).

        Args:
            image (Tensor[S, C, H, W], uint8 or float32 in ``[0, 1]``).

        Returns:
            Tensor[S, C, H', W'], float32: resized by ``input_scale``, padded to
            ``max_stride``.
        """
        frames = resize_frames(normalize_frames(image), self.num, self.den)
        return pad_to_stride(frames, self.max_stride)

    def _frame_stride(self, stride: float) -> float:
        """Factor from head-output pixels to frame pixels: ``stride / input_scale``."""
        return stride * self.den / self.num

    def extra_repr(self) -> str:
        return (
            f"input_scale={self.input_scale:g}, max_stride={self.max_stride}, "
            f"threshold={self.threshold}, refinement={self.refinement!r}, "
            f"patch_size={self.patch_size}"
        )


def _positive_stride(stride: object, name: str) -> float:
    value = python_float(stride, name)
    if not value > 0.0 or value == float("inf"):
        raise ValueError(name + " must be a positive finite number, got " + str(stride))
    return value


class SingleInstancePipeline(Pipeline):
    """Frames → head → global peaks → frame pixels (SPEC §5.2).

    Args:
        head (nn.Module): float32 ``[0, 1]`` images ``(S, C, H', W')`` → maps ``(S, N, h,
            w)`` (or a tuple/dict holding them, see ``head_output``).
        stride (float): the head's output stride ``t``.
        input_scale (float), max_stride (int): frame settings (see
            :func:`~.frames.prepare_frames`).
        threshold (float), refinement (str or None), patch_size (int): as
            :func:`~.global_peaks.global_peaks`.
        head_output (None, int or str): where the maps are in the head's output.

    ``forward(image (Tensor[S, C, H, W], uint8 or float32 [0, 1]))`` returns ``peaks
    (Tensor[S, N, 2], float32)`` in frame pixels (NaN where dropped) and ``peak_vals
    (Tensor[S, N])`` (0 where dropped).
    """

    output_names = ("peaks", "peak_vals")
    kind = "single_instance"

    def __init__(self, head: nn.Module, stride: float = 1.0, input_scale: float = 1.0,
                 max_stride: int = 1, threshold: float = 0.2,
                 refinement: Optional[str] = "integral", patch_size: int = 5,
                 head_output: Selector = None) -> None:
        super().__init__(input_scale, max_stride, threshold, refinement, patch_size)
        self.head = _one_output(head, head_output, "head")
        self.stride = _positive_stride(stride, "stride")

    def find_peaks(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage: the head's maps ``(S, N, h, w)`` → ``(peaks, peak_vals)`` in frame pixels."""
        _check_maps(maps, "head")
        return global_peaks(maps, self.threshold, self.refinement, self.patch_size,
                            self._frame_stride(self.stride))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.find_peaks(self.head(self.prepare(image)))

    def extra_repr(self) -> str:
        return f"stride={self.stride:g}, " + super().extra_repr()


def _centroids(maps: torch.Tensor, k: int, threshold: float, refinement: Optional[str],
               patch_size: int, stride: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_maps(maps, "centroid_head")
    if maps.shape[1] != 1:
        raise ValueError(
            "centroid_head must return one channel (the centroid map), got "
            + str(maps.shape[1])
        )
    points, vals, valid = topk_peaks(maps, k, threshold, refinement, patch_size, stride)
    return points[:, 0], vals[:, 0], valid[:, 0]


class CentroidPipeline(Pipeline):
    """Frames → centroid head → top-K peaks → frame pixels (SPEC §5.3).

    Args:
        head (nn.Module): images → one-channel maps ``(S, 1, h, w)``.
        max_instances (int): slots ``I`` (1 to 4095).
        stride, input_scale, max_stride, threshold, refinement, patch_size, head_output:
            as :class:`SingleInstancePipeline`; peaks follow :func:`~.topk_peaks.topk_peaks`.

    ``forward(image (Tensor[S, C, H, W], uint8 or float32))`` returns ``centroids
    (Tensor[S, I, 2], float32)`` in frame pixels, ``centroid_vals (Tensor[S, I])`` and
    ``instance_valid (Tensor[S, I], bool)``; slots by value descending, empty slots NaN/0.
    """

    output_names = ("centroids", "centroid_vals", "instance_valid")
    kind = "centroid"

    def __init__(self, head: nn.Module, max_instances: int, stride: float = 1.0,
                 input_scale: float = 1.0, max_stride: int = 1, threshold: float = 0.2,
                 refinement: Optional[str] = "integral", patch_size: int = 5,
                 head_output: Selector = None) -> None:
        super().__init__(input_scale, max_stride, threshold, refinement, patch_size)
        self.head = _one_output(head, head_output, "head")
        self.max_instances = _max_instances(max_instances)
        self.stride = _positive_stride(stride, "stride")

    def find_centroids(self, maps: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage: the head's maps ``(S, 1, h, w)`` → ``(centroids, centroid_vals,
        instance_valid)`` in frame pixels."""
        return _centroids(maps, self.max_instances, self.threshold, self.refinement,
                          self.patch_size, self._frame_stride(self.stride))

    def forward(self, image: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.find_centroids(self.head(self.prepare(image)))

    def extra_repr(self) -> str:
        return f"max_instances={self.max_instances}, stride={self.stride:g}, " + (
            super().extra_repr()
        )


def _max_instances(value: object) -> int:
    count = python_int(value, "max_instances")
    if count < 1:
        raise ValueError("max_instances must be at least 1, got " + str(count))
    check_k(count)
    return count


def _crop_size(crop_size: object) -> tuple[int, int]:
    if isinstance(crop_size, int) and not isinstance(crop_size, bool):
        crop_size = (crop_size, crop_size)
    if not isinstance(crop_size, (tuple, list)) or len(crop_size) != 2:
        raise TypeError("crop_size must be an int or a pair (height, width), got "
                        + repr(crop_size))
    height = python_int(crop_size[0], "crop_size")
    width = python_int(crop_size[1], "crop_size")
    if height < 1 or width < 1:
        raise ValueError("crop_size must be positive, got " + repr(tuple(crop_size)))
    check_crop_size(height, width)
    return height, width


class TopDownPipeline(Pipeline):
    """Centroids, a crop around each, instance peaks in frame pixels (SPEC §5.4).

    Args:
        centroid_head (nn.Module): scaled frames → one-channel centroid maps.
        instance_head (nn.Module): crops ``(S * I, C, h', w')`` → part maps ``(S * I, N,
            ., .)`` (``instance_output`` says where, as ``head_output``).
        crop_size (int or (int, int)): ``(h, w)`` of every crop, in frame pixels.
        max_instances (int): slots ``I``.
        centroid_stride, instance_stride (float): output strides of the two heads.
        input_scale (float), max_stride (int): for the centroid head's frames.
        instance_input_scale (float), instance_max_stride (int): for the crops.
        threshold (float): centroid threshold (top-K, strict); peak_threshold (float):
            body-part threshold (global, inclusive).
        refinement, patch_size: both peak stages.

    ``forward(image (Tensor[S, C, H, W], uint8 or float32))`` returns ``centroids
    (Tensor[S, I, 2], float32)``, ``centroid_vals (Tensor[S, I])``, ``peaks (Tensor[S, I,
    N, 2], float32)``, ``peak_vals (Tensor[S, I, N])`` and ``instance_valid (Tensor[S,
    I], bool)``. Points are frame pixels; an empty slot is NaN / 0 in every output.
    """

    output_names = ("centroids", "centroid_vals", "peaks", "peak_vals", "instance_valid")
    kind = "topdown"

    def __init__(self, centroid_head: nn.Module, instance_head: nn.Module,
                 crop_size: Union[int, tuple[int, int]], max_instances: int,
                 centroid_stride: float = 1.0, instance_stride: float = 1.0,
                 input_scale: float = 1.0, max_stride: int = 1,
                 instance_input_scale: float = 1.0, instance_max_stride: int = 1,
                 threshold: float = 0.2, peak_threshold: float = 0.2,
                 refinement: Optional[str] = "integral", patch_size: int = 5,
                 centroid_output: Selector = None, instance_output: Selector = None) -> None:
        super().__init__(input_scale, max_stride, threshold, refinement, patch_size)
        self.centroid_head = _one_output(centroid_head, centroid_output, "centroid_head")
        self.instance_head = self._instance_head(instance_head, instance_output)
        self.crop_height, self.crop_width = _crop_size(crop_size)
        self.max_instances = _max_instances(max_instances)
        self.centroid_stride = _positive_stride(centroid_stride, "centroid_stride")
        self.instance_stride = _positive_stride(instance_stride, "instance_stride")
        self.instance_input_scale = python_float(instance_input_scale, "instance_input_scale")
        self.instance_num, self.instance_den = scale_fraction(
            self.instance_input_scale, "instance_input_scale"
        )
        self.instance_max_stride = python_int(instance_max_stride, "instance_max_stride")
        check_max_stride(self.instance_max_stride, "instance_max_stride")
        self.peak_threshold = python_float(peak_threshold, "peak_threshold")
        check_threshold(self.peak_threshold)

    def _instance_head(self, head: nn.Module, instance_output: Selector) -> nn.Module:
        return _one_output(head, instance_output, "instance_head")

    def centroids_and_crops(self, image: torch.Tensor, maps: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """Stage: frames and the centroid head's maps → centroids, then the instance
        head's input.

        Args:
            image (Tensor[S, C, H, W], uint8 or float32): the frames.
            maps (Tensor[S, 1, h, w], float): the centroid head's output on
                :meth:`prepare` of ``image``.

        Returns:
            ``(centroids (Tensor[S, I, 2], float32), centroid_vals (Tensor[S, I]),
            instance_valid (Tensor[S, I], bool), crops (Tensor[S * I, C, h', w'],
            float32), top_left (Tensor[S, I, 2], float32))``.
        """
        centroids, centroid_vals, valid = _centroids(
            maps, self.max_instances, self.threshold, self.refinement, self.patch_size,
            self._frame_stride(self.centroid_stride),
        )
        # Cut from the frames as given and converted after: the same values as crops of
        # converted frames (0 stays 0), at the cost of the crops, not of the frames again.
        crops, top_left = centred_crops(image, centroids, self.crop_height, self.crop_width)
        crops = crops.reshape(-1, image.shape[1], self.crop_height, self.crop_width)
        crops = resize_frames(normalize_frames(crops), self.instance_num, self.instance_den)
        crops = pad_to_stride(crops, self.instance_max_stride)
        return centroids, centroid_vals, valid, crops, top_left

    def instance_peaks(self, maps: torch.Tensor, valid: torch.Tensor, top_left: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage: the instance head's maps ``(S * I, N, h, w)``, ``instance_valid (S, I)``
        and ``top_left (S, I, 2)`` → ``(peaks (Tensor[S, I, N, 2], float32), peak_vals
        (Tensor[S, I, N]))`` in frame pixels, NaN / 0 in empty slots."""
        _check_maps(maps, "instance_head")
        factor = self.instance_stride * self.instance_den / self.instance_num
        points, vals = global_peaks(maps, self.peak_threshold, self.refinement,
                                    self.patch_size, factor)
        points = points.reshape(-1, self.max_instances, maps.shape[1], 2)
        vals = vals.reshape(-1, self.max_instances, maps.shape[1])
        points = points + top_left[:, :, None, :]
        points = torch.where(valid[:, :, None, None], points,
                             torch.full_like(points, float("nan")))
        vals = torch.where(valid[:, :, None], vals, torch.zeros_like(vals))
        return points, vals

    def forward(self, image: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        centroids, centroid_vals, valid, crops, top_left = self.centroids_and_crops(
            image, self.centroid_head(self.prepare(image)))
        peaks, peak_vals = self.instance_peaks(self.instance_head(crops), valid, top_left)
        return centroids, centroid_vals, peaks, peak_vals, valid

    def extra_repr(self) -> str:
        return (
            f"crop_size=({self.crop_height}, {self.crop_width}), "
            f"max_instances={self.max_instances}, centroid_stride={self.centroid_stride:g}, "
            f"instance_stride={self.instance_stride:g}, "
            f"instance_input_scale={self.instance_input_scale:g}, "
            f"instance_max_stride={self.instance_max_stride}, "
            f"peak_threshold={self.peak_threshold}, " + super().extra_repr()
        )


class MultiClassTopDownPipeline(TopDownPipeline):
    """Top-down with class vectors (SPEC §5.4): the instance head returns maps and class
    probabilities ``(S * I, K)`` (``instance_output`` and ``class_output`` say where: two
    tuple indices, default 0 and 1, or two dict keys).

    ``forward`` returns the :class:`TopDownPipeline` outputs, then ``class_probs
    (Tensor[S, I, K], float32)`` (0 in empty slots). The assignment of instances to classes
    runs on the host (:func:`peaklayers.serving.pipelines.assign_instance_classes`).
    """

    output_names = TopDownPipeline.output_names + ("class_probs",)
    kind = "multi_class_topdown"

    def __init__(self, centroid_head: nn.Module, instance_head: nn.Module,
                 crop_size: Union[int, tuple[int, int]], max_instances: int,
                 centroid_stride: float = 1.0, instance_stride: float = 1.0,
                 input_scale: float = 1.0, max_stride: int = 1,
                 instance_input_scale: float = 1.0, instance_max_stride: int = 1,
                 threshold: float = 0.2, peak_threshold: float = 0.2,
                 refinement: Optional[str] = "integral", patch_size: int = 5,
                 centroid_output: Selector = None, instance_output: Selector = 0,
                 class_output: Selector = 1) -> None:
        self._class_output = class_output
        super().__init__(centroid_head, instance_head, crop_size, max_instances,
                         centroid_stride, instance_stride, input_scale, max_stride,
                         instance_input_scale, instance_max_stride, threshold,
                         peak_threshold, refinement, patch_size, centroid_output,
                         instance_output)

    def _instance_head(self, head: nn.Module, instance_output: Selector) -> nn.Module:
        return _two_outputs(head, instance_output, self._class_output, "instance_head")

    def forward(self, image: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        centroids, centroid_vals, valid, crops, top_left = self.centroids_and_crops(
            image, self.centroid_head(self.prepare(image)))
        maps, classes = self.instance_head(crops)
        peaks, peak_vals, probs = self.instance_peaks_and_classes(maps, classes, valid,
                                                                  top_left)
        return centroids, centroid_vals, peaks, peak_vals, valid, probs

    def instance_peaks_and_classes(self, maps: torch.Tensor, classes: torch.Tensor,
                                   valid: torch.Tensor, top_left: torch.Tensor
                                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage: :meth:`instance_peaks`, and the class vectors ``(S * I, K)`` as
        ``class_probs (Tensor[S, I, K], float32)``, 0 in empty slots."""
        peaks, peak_vals = self.instance_peaks(maps, valid, top_left)
        if classes.dim() != 2:
            raise ValueError(
                "instance_head's class output must be class vectors (samples, classes), "
                "got shape " + str(classes.shape)
            )
        probs = classes.to(torch.float32).reshape(-1, self.max_instances, classes.shape[1])
        probs = torch.where(valid[:, :, None], probs, torch.zeros_like(probs))
        return peaks, peak_vals, probs
