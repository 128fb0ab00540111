"""Exact centred crops of constant size for top-down graphs (SPEC §5.4)."""

import torch
from torch import nn

from ._checks import python_int


def check_crop_size(crop_height: int, crop_width: int) -> None:
    if crop_height < 1:
        raise ValueError("crop_height must be a positive integer, got " + str(crop_height))
    if crop_width < 1:
        raise ValueError("crop_width must be a positive integer, got " + str(crop_width))


def centred_crops(
    image: torch.Tensor, centres: torch.Tensor, crop_height: int, crop_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``crop_height x crop_width`` crop around every centre, exact pixels, 0 outside.

    The crop of centre ``(cx, cy)`` has its top-left pixel at ``(round(cx) - w // 2,
    round(cy) - h // 2)``, rounding half up (``floor(c + 0.5)``). Its pixels are the
    frame's own values, gathered (no interpolation); pixels outside the frame are 0. This
    equals ``crop_bboxes(image, make_centered_bboxes(c, h, w), ...)`` of the reference
    library wherever that box starts on a pixel (half-integer ``c`` along an even size,
    integer ``c`` along an odd size); elsewhere the reference interpolates between pixels
    and this crop snaps to the nearest pixel grid instead.
    A non-finite centre (an empty slot) gives an all-zero crop and a NaN top-left.

    The cost is that of the crops: one gather of ``S * I * C * h * w`` pixels from the
    flattened frames; no frame is copied per slot (the reference's exported graph
    expanded the whole frame once per slot for ``grid_sample``). The crop size and slot
    count are constants of the graph; the frame size is not.

    Args:
        image (Tensor[S, C, H, W]): frames, any dtype.
        centres (Tensor[S, I, 2], floating point): ``(x, y)`` in frame pixels.
        crop_height, crop_width (int): ``h, w >= 1``; larger than the frame is fine.

    Returns:
        crops (Tensor[S, I, C, h, w], dtype of ``image``).
        top_left (Tensor[S, I, 2], float32): ``(x0, y0)`` of each crop in frame pixels,
        integers (NaN for a non-finite centre); a crop pixel ``(u, v)`` is frame pixel
        ``(x0 + u, y0 + v)``.
    """
    if image.dim() != 4:
        raise ValueError(
            "image must be a 4-D tensor (samples, channels, height, width), got "
            + str(image.dim()) + "-D"
        )
    if centres.dim() != 3 or centres.shape[2] != 2:
        raise ValueError("centres must have shape (S, I, 2), got " + str(centres.shape))
    if not centres.is_floating_point():
        raise TypeError("centres must have a floating-point dtype, got " + str(centres.dtype))
    check_crop_size(crop_height, crop_width)
    samples, channels = image.shape[0], image.shape[1]
    height, width, slots = image.shape[2], image.shape[3], centres.shape[1]

    centres = centres.to(torch.float32)
    finite = torch.isfinite(centres).all(dim=2)  # (S, I)
    safe = torch.where(finite[:, :, None], centres, torch.zeros_like(centres))
    half = torch.tensor([crop_width // 2, crop_height // 2], device=centres.device)
    corner = torch.floor(safe + 0.5).to(torch.int64) - half  # (S, I, 2) int64
    rows = corner[:, :, 1, None] + torch.arange(crop_height, device=image.device)  # (S, I, h)
    cols = corner[:, :, 0, None] + torch.arange(crop_width, device=image.device)  # (S, I, w)
    inside = (
        ((rows >= 0) & (rows < height))[:, :, :, None]
        & ((cols >= 0) & (cols < width))[:, :, None, :]
        & finite[:, :, None, None]
    )  # (S, I, h, w)
    flat = rows[:, :, :, None] * width + cols[:, :, None, :]
    # Pixels outside read index 0, then become 0. ``torch.where``, not ``clamp``: TensorRT's
    # ONNX parser takes ``Clip`` on floating-point tensors only.
    flat = torch.where(inside, flat, torch.zeros_like(flat))
    count = slots * crop_height * crop_width
    index = flat.reshape(samples, 1, count).expand(samples, channels, count)
    pixels = image.reshape(samples, channels, height * width).gather(2, index)
    crops = pixels.reshape(samples, channels, slots, crop_height, crop_width).permute(0, 2, 1, 3, 4)
    crops = torch.where(inside[:, :, None], crops, torch.zeros_like(crops))

    top_left = corner.to(torch.float32)
    top_left = torch.where(finite[:, :, None], top_left, torch.full_like(top_left, float("nan")))
    return crops, top_left


class CentredCrops(nn.Module):
    """Exact centred crops of constant size. See :func:`centred_crops`.

    ``forward(image (Tensor[S, C, H, W]), centres (Tensor[S, I, 2]))`` returns ``crops
    (Tensor[S, I, C, h, w], dtype of image)`` and ``top_left (Tensor[S, I, 2], float32)``.
    """

    def __init__(self, crop_height: int, crop_width: int) -> None:
        super().__init__()
        self.crop_height = python_int(crop_height, "crop_height")
        self.crop_width = python_int(crop_width, "crop_width")
        check_crop_size(self.crop_height, self.crop_width)

    def forward(
        self, image: torch.Tensor, centres: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return centred_crops(image, centres, self.crop_height, self.crop_width)

    def extra_repr(self) -> str:
        return f"crop_height={self.crop_height}, crop_width={self.crop_width}"
