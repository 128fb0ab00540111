"""Frames into a head's input, and head points back into frame pixels (SPEC §5.1).

``uint8`` or float frames → float32 in ``[0, 1]`` → resized by ``input_scale`` → zero
padded at the bottom and right to a multiple of ``max_stride``. A point of a head with
output stride ``t`` then maps to frame pixels as ``p * t / s`` (:func:`to_frame_pixels`).

Every size is computed from the input's shape inside the graph, never from the example
used to export: the resize is two small matrix products whose weights are built from
``arange`` of the input and output lengths, and the output length ``floor(H * s)`` is an
integer ``(H * num) // den`` (``num / den`` is ``s`` as a fraction), which every tracer and
exporter keeps symbolic.

Why matrices and not ``F.interpolate``: the TorchScript-based ONNX exporter has no
translation of ``antialias=True`` at any opset (``aten::_upsample_bilinear2d_aa``), and the
dynamo exporter's ONNX ``Resize(antialias=1)`` (opset >= 18) runs in ONNX Runtime 1.31 with
results up to 0.29 (of a 0..1 range) away from PyTorch's on random frames. The weights
below are PyTorch's own (a triangle filter of width ``max(1 / s, 1)`` around the source
coordinate ``(i + 0.5) / s - 0.5``, normalised; for ``s > 1`` this is plain bilinear with
``align_corners=False``), so eager, TorchScript, ``torch.export`` and ONNX Runtime all give
the same numbers at any opset.
"""

from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import python_float, python_int

# The scale is used as a fraction with a denominator up to this (0.37 is 37/100, 1/3 is
# 1/3): ``(H * num) // den`` stays exact in int64 for any frame size.
_MAX_DENOMINATOR = 1000


def check_input_scale(input_scale: float, name: str = "input_scale") -> None:
    if not input_scale > 0.0 or input_scale == float("inf"):
        raise ValueError(name + " must be a positive finite number, got " + str(input_scale))


def check_max_stride(max_stride: int, name: str = "max_stride") -> None:
    if max_stride < 1:
        raise ValueError(name + " must be a positive integer, got " + str(max_stride))


def scale_fraction(input_scale: float, name: str = "input_scale") -> tuple[int, int]:
    """``input_scale`` as ``(num, den)`` with ``den <= 1000``, the closest such fraction.

    Raises ValueError if the scale is not positive and finite, or is too small to be a
    fraction with that denominator.
    """
    check_input_scale(input_scale, name)
    fraction = Fraction(input_scale).limit_denominator(_MAX_DENOMINATOR)
    if fraction <= 0:
        raise ValueError(name + " is too small (below 1/1000), got " + str(input_scale))
    return fraction.numerator, fraction.denominator


def _resize_weights(
    length: int, out_length: int, num: int, den: int, device: torch.device
) -> torch.Tensor:
    """PyTorch's bilinear (antialiased when shrinking) weights along one axis.

    Output pixel ``i`` reads input pixels ``j`` with weight ``max(0, 1 - |j - c_i| / f)``,
    normalised over ``j``, where ``c_i = (i + 0.5) / s - 0.5`` and ``f = max(1 / s, 1)``.

    Args:
        length (int): input length; out_length (int): ``floor(length * num / den)``.
        num, den (int): the scale ``s = num / den``.

    Returns:
        Tensor[out_length, length], float32.
    """
    inv = float(den) / float(num)
    width = max(inv, 1.0)
    src = (torch.arange(out_length, device=device, dtype=torch.float32) + 0.5) * inv - 0.5
    pixels = torch.arange(length, device=device, dtype=torch.float32)
    weights = (1.0 - (pixels[None, :] - src[:, None]).abs() / width).clamp(min=0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def resize_frames(image: torch.Tensor, num: int, den: int) -> torch.Tensor:
    """Resize by ``s = num / den`` to ``(floor(H * s), floor(W * s))``.

    Bilinear with ``align_corners=False``, antialiased when ``s < 1``: equal (to float32
    rounding) to ``F.interpolate(image, scale_factor=s, mode="bilinear",
    align_corners=False, antialias=True)``. ``s == 1`` returns ``image`` itself.

    Args:
        image (Tensor[S, C, H, W], float32).
        num, den (int): positive.

    Returns:
        Tensor[S, C, floor(H * s), floor(W * s)], float32.
    """
    if num == den:
        return image
    height, width = image.shape[2], image.shape[3]
    out_height, out_width = height * num // den, width * num // den
    if not torch.jit.is_scripting() and torch.compiler.is_compiling():
        # torch.export cannot prove ``H * num // den > 1`` from a lower bound on ``H`` and
        # would specialise the frame size; exports are made for frames this large (see
        # ``Pipeline.min_frame_size``), and the program asserts it.
        torch._check(out_height > 1)
        torch._check(out_width > 1)
    rows = _resize_weights(height, out_height, num, den, image.device)
    cols = _resize_weights(width, out_width, num, den, image.device)
    # Both products on the last axis of contiguous tensors (``linear``): a matrix times
    # the 4-D batch, or a product on a transposed view, leaves ``torch.export`` with
    # guards on sizes it cannot prove (``H // 2 != 1``, from reshaping a view).
    columns_first = image.transpose(2, 3).contiguous()
    resized = F.linear(columns_first, rows).transpose(2, 3).contiguous()  # (S, C, h', W)
    return F.linear(resized, cols)


def pad_to_stride(image: torch.Tensor, max_stride: int) -> torch.Tensor:
    """Zero padding at the bottom and right up to the next multiple of ``max_stride``.

    Args:
        image (Tensor[S, C, H, W]).
        max_stride (int): ``>= 1``; 1 returns ``image`` itself.

    Returns:
        Tensor[S, C, ceil(H / m) * m, ceil(W / m) * m], dtype of ``image``.
    """
    if max_stride == 1:
        return image
    height, width = image.shape[2], image.shape[3]
    # ``(H + m - 1) // m * m - H``, not ``-H % m``: the dynamo exporter failed on ``%`` of
    # a symbolic size.
    pad_h = (height + max_stride - 1) // max_stride * max_stride - height
    pad_w = (width + max_stride - 1) // max_stride * max_stride - width
    return F.pad(image, [0, pad_w, 0, pad_h])


def normalize_frames(image: torch.Tensor) -> torch.Tensor:
    """``uint8`` frames as float32 ``/ 255``; float frames as float32 (already ``[0, 1]``).

    Args:
        image (Tensor[S, C, H, W], uint8 or floating point).

    Returns:
        Tensor[S, C, H, W], float32.
    """
    if image.dim() != 4:
        raise ValueError(
            "image must be a 4-D tensor (samples, channels, height, width), got "
            + str(image.dim()) + "-D"
        )
    if image.dtype == torch.uint8:
        return image.to(torch.float32) / 255.0
    if not image.is_floating_point():
        raise TypeError("image must be uint8 or floating point, got " + str(image.dtype))
    return image.to(torch.float32)


def prepare_frames(
    image: torch.Tensor, input_scale: float = 1.0, max_stride: int = 1
) -> torch.Tensor:
    """Frames as a head's input: float32 ``[0, 1]``, resized, padded (SPEC §5.1).

    Args:
        image (Tensor[S, C, H, W], uint8 or float in ``[0, 1]``): frames.
        input_scale (float): ``s > 0``; see :func:`resize_frames` (used as the closest
            fraction with a denominator up to 1000).
        max_stride (int): ``m >= 1``; see :func:`pad_to_stride`.

    Returns:
        Tensor[S, C, ceil(floor(H * s) / m) * m, ceil(floor(W * s) / m) * m], float32.
    """
    num, den = scale_fraction(input_scale)
    check_max_stride(max_stride)
    return pad_to_stride(resize_frames(normalize_frames(image), num, den), max_stride)


def to_frame_pixels(points: torch.Tensor, stride: float, input_scale: float) -> torch.Tensor:
    """Head points ``p`` (head-output pixels) as frame pixels ``p * stride / input_scale``.

    Args:
        points (Tensor[..., 2], float32): ``(x, y)``; NaN stays NaN.
        stride (float): the head's output stride ``t``.
        input_scale (float): the frame scale ``s`` of :func:`prepare_frames`.

    Returns:
        Tensor[..., 2], float32.
    """
    return points * (stride / input_scale)


class PrepareFrames(nn.Module):
    """Frames as a head's input. See :func:`prepare_frames`.

    ``forward(image (Tensor[S, C, H, W], uint8 or float))`` returns the float32 frames,
    resized by ``input_scale`` and padded to a multiple of ``max_stride``.
    """

    def __init__(self, input_scale: float = 1.0, max_stride: int = 1) -> None:
        super().__init__()
        self.input_scale = python_float(input_scale, "input_scale")
        self.num, self.den = scale_fraction(self.input_scale)
        self.max_stride = python_int(max_stride, "max_stride")
        check_max_stride(self.max_stride)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        frames = resize_frames(normalize_frames(image), self.num, self.den)
        return pad_to_stride(frames, self.max_stride)

    def extra_repr(self) -> str:
        return f"input_scale={self.input_scale:g}, max_stride={self.max_stride}"
