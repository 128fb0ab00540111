"""Video files decoded with PyAV (the ``video`` extra), a batch of frames at a time.

The file is opened once up front to check that it holds a decodable video stream and
that its frames fit the pixel budget; decoding then streams, keeping at most one batch of
frames in memory. Any decoding error is one :class:`ToolError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .common import ToolError, first_line

# PyAV's pixel formats for the graph's channel counts.
_PIXEL_FORMATS = {1: "gray", 3: "rgb24"}


def _pyav():
    try:
        import av
    except ImportError:
        raise ToolError("reading video files needs PyAV: pip install 'peaklayers[video]'"
                        ) from None
    return av


def _unreadable(path: Path, error: BaseException) -> ToolError:
    return ToolError(f"{path}: not a readable video ({first_line(error)})")


def _video_errors(av) -> tuple[type[BaseException], ...]:
    return (av.error.FFmpegError, OSError, ValueError, EOFError)


def _pixel_format(path: Path, channels: int | None, stream) -> str:
    if channels is None:  # a graph open to any channel count: keep grey videos grey
        grey = stream.codec_context.pix_fmt or ""
        return "gray" if grey.startswith(("gray", "y")) else "rgb24"
    if channels not in _PIXEL_FORMATS:
        raise ToolError(f"{path}: the model takes {channels} channels; video frames are read "
                        "as 1 (grey) or 3 (RGB)")
    return _PIXEL_FORMATS[channels]


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ToolError(f"{path}: the video's frames are {width}×{height} = "
                        f"{width * height:,} pixels, over the budget of {max_pixels:,} "
                        "(--max-pixels raises it)")


def open_video(path: Path, channels: int | None, max_pixels: int
               ) -> tuple[int | None, Callable[[int], Iterator[np.ndarray]]]:
    """The frame count of ``path`` (None where the container does not say) and
    ``batches(size)``: an iterator of uint8 ``(B, C, H, W)`` arrays, ``B <= size`` (a
    batch also ends where the frame size changes)."""
    av = _pyav()
    errors = _video_errors(av)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ToolError(f"{path}: the file holds no video stream")
            stream = container.streams.video[0]
            _check_size(path, stream.codec_context.width, stream.codec_context.height,
                        max_pixels)
            pixel_format = _pixel_format(path, channels, stream)
            count = int(stream.frames) or None
    except errors as error:
        raise _unreadable(path, error) from None

    def batches(size: int) -> Iterator[np.ndarray]:
        frames: list[np.ndarray] = []
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    _check_size(path, frame.width, frame.height, max_pixels)
                    image = frame.to_ndarray(format=pixel_format)
                    image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
                    if frames and (len(frames) == size or image.shape != frames[0].shape):
                        yield np.stack(frames)
                        frames = []
                    frames.append(image)
        except errors as error:
            raise _unreadable(path, error) from None
        if not frames:  # every decoded frame leaves the last batch non-empty
            raise ToolError(f"{path}: not a readable video (no frame could be decoded)")
        yield np.stack(frames)

    return count, batches
