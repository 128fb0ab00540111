"""Minimal PNG writing and reading (8-bit, non-interlaced) with zlib and struct, and marker drawing.

Enough for the demo picture and for feeding image files to ``python -m export run``; not a
general image library (no palette, 16-bit or interlaced files: those are refused clearly).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .common import ToolError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel

# One colour per body part (RGB, 0-255), cycled when there are more parts.
PART_COLOURS = [(255, 64, 64), (64, 255, 64), (80, 160, 255), (255, 220, 0), (255, 0, 255),
                (0, 255, 255), (255, 140, 0), (160, 100, 255)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write ``image`` (uint8, ``(H, W)`` grey or ``(H, W, 3)`` RGB) as a PNG file."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim == 2:
        colour_type = 0
    elif image.ndim == 3 and image.shape[2] == 3:
        colour_type = 2
    else:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {image.shape}")
    height, width = image.shape[:2]
    rows = image.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    Path(path).write_bytes(
        _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _unfilter(data: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    pos = 0
    for y in range(height):
        kind = data[pos]
        line = np.frombuffer(data, dtype=np.uint8, count=stride, offset=pos + 1).astype(np.int32)
        pos += stride + 1
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:  # Sub, Average and Paeth depend on the bytes to the left: go byte by byte.
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                elif kind == 4:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                else:
                    raise ToolError(f"corrupt PNG: unknown row filter {kind}")
                cur[i] = (line[i] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out


def read_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit non-interlaced PNG as uint8 ``(H, W, channels)``."""
    data = Path(path).read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ToolError(f"{path}: not a PNG file")
    pos, header, idat = len(_SIGNATURE), None, []
    try:
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos:pos + 4])
            kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
            pos += 12 + length
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
        width, height, depth, colour_type, _, _, interlace = header
        raw = zlib.decompress(b"".join(idat))
    except (struct.error, TypeError, zlib.error) as error:
        raise ToolError(f"{path}: corrupt PNG file ({error})") from None
    if depth != 8 or colour_type not in _CHANNELS or interlace:
        raise ToolError(f"{path}: only 8-bit non-interlaced grey/RGB/RGBA PNG files are read")
    channels = _CHANNELS[colour_type]
    if len(raw) != height * (width * channels + 1):
        raise ToolError(f"{path}: corrupt PNG file (wrong amount of pixel data)")
    return _unfilter(raw, height, width * channels, channels).reshape(height, width, channels)


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
