"""PNG pictures through Pillow (the ``tool`` extra), and marker drawing for the demo picture.

Reading is bounded: the size a file declares is checked against a pixel budget before any
pixel is decoded (a few kB of zlib can declare gigabytes of zeros), and Pillow stops
inflating once the declared pixels are filled, so a small image cannot unpack a huge
stream either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import ToolError, first_line

# Default pixel budget of one input picture (height × width): 50 megapixels, about 2 GB
# once converted to floating point. ``python -m export run --max-pixels`` raises it.
MAX_PIXELS = 50_000_000

# One colour per body part (RGB, 0-255), cycled when there are more parts.
PART_COLOURS = [(255, 64, 64), (64, 255, 64), (80, 160, 255), (255, 220, 0), (255, 0, 255),
                (0, 255, 255), (255, 140, 0), (160, 100, 255)]

_GREY_MODES = {"1", "L", "LA", "La"}
_EIGHT_BIT_MODES = _GREY_MODES | {"P", "PA", "RGB", "RGBA", "RGBa", "RGBX"}


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ToolError("reading and writing PNG files needs Pillow: "
                        "pip install 'peaklayers[tool]'") from None
    return Image


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write ``image`` (uint8, ``(H, W)`` grey or ``(H, W, 3)`` RGB) as a PNG file."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {image.shape}")
    _pillow().fromarray(image).save(path, format="PNG")


def read_png(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An 8-bit PNG as uint8 ``(H, W, 1)`` (grey) or ``(H, W, 3)`` (colour; alpha dropped).

    Raises :class:`ToolError` for a file that is not a readable PNG, for 16-bit pictures,
    and before decoding when its declared height × width exceeds ``max_pixels``.
    """
    image_module = _pillow()
    saved = image_module.MAX_IMAGE_PIXELS
    image_module.MAX_IMAGE_PIXELS = None  # the budget below replaces Pillow's own
    try:
        with image_module.open(path, formats=["PNG"]) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ToolError(f"{path}: the picture declares {width}×{height} = "
                                f"{width * height:,} pixels, over the budget of "
                                f"{max_pixels:,} (--max-pixels raises it)")
            if image.mode not in _EIGHT_BIT_MODES:
                raise ToolError(f"{path}: {image.mode} pictures are not read (8-bit grey or "
                                "colour PNG only; save other data as .npy)")
            image.load()
            grey = image.mode in _GREY_MODES
            array = np.asarray(image.convert("L" if grey else "RGB"))
    except ToolError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, image_module.DecompressionBombError
            ) as error:
        raise ToolError(f"{path}: not a readable PNG file ({first_line(error)})") from None
    finally:
        image_module.MAX_IMAGE_PIXELS = saved
    return array[:, :, None] if grey else array


def draw_cross(image: np.ndarray, x: float, y: float, colour: tuple, size: int = 3) -> None:
    """Draw a ``+`` of half-size ``size`` centred on ``(x, y)``, outlined in black."""
    height, width = image.shape[:2]
    cx, cy = int(round(x)), int(round(y))
    for offset, paint in ((1, (0, 0, 0)), (0, colour)):
        for d in range(-size - offset, size + offset + 1):
            for w in range(-offset, offset + 1):
                for px, py in ((cx + d, cy + w), (cx + w, cy + d)):
                    if 0 <= px < width and 0 <= py < height:
                        image[py, px] = paint


def draw_circle(image: np.ndarray, x: float, y: float, colour: tuple, radius: float = 4.5) -> None:
    """Draw a one-pixel circle outline of ``radius`` around ``(x, y)``."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    ring = np.abs(np.hypot(xs - x, ys - y) - radius) < 0.5
    image[ring] = colour
