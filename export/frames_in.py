"""Frames for a pipeline graph, in batches: uint8 ``.npy`` arrays, PNG images and videos.

Every input is opened (and its size checked against the pixel budget) before any frame is
run, so a bad file is reported before a long video is processed. Frames are then read a
batch at a time: a ``.npy`` array is memory-mapped and a video decoded as it goes
(:mod:`.video`), so memory stays bounded however long the input is.

A uint8 graph gets the uint8 pixels as they are (it divides by 255 itself, SPEC §5.1); a
float graph gets them divided by 255. A ``.npy`` of another dtype goes only to a float
graph, as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import ToolError, first_line
from .png import read_png

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class FrameSource:
    """One input file: its name, its frame count (None where a video does not say) and
    ``batches(size)``, an iterator of ``(B, C, H, W)`` arrays of the graph's dtype."""

    name: str
    count: int | None
    batches: Callable[[int], Iterator[np.ndarray]]


def npy_header(path: Path, handle) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, without reading the data."""
    start = handle.read(6)
    handle.seek(0)
    if start.startswith(b"PK\x03\x04"):
        raise ToolError(f"{path}: a zip archive (.npz?), not a .npy array; save one array "
                        "with numpy.save")
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ToolError(f"{path}: .npy format version {version[0]}.{version[1]} is not "
                            "read (it holds named fields: save a plain numeric array)")
    except (ValueError, OSError, EOFError) as error:
        raise ToolError(f"{path}: not a readable .npy array ({first_line(error)})") from None
    return tuple(shape), dtype


def as_graph_input(frames: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``frames`` as the graph takes them: uint8 kept for a uint8 graph, / 255 for a float
    one; other real arrays (float graphs only) cast."""
    if dtype == np.uint8 or frames.dtype != np.uint8:
        return np.ascontiguousarray(frames, dtype=dtype)
    return np.ascontiguousarray(frames / 255.0, dtype=dtype)


def _check_channels(path: Path, channels: int | None, got: int) -> None:
    if channels is not None and got != channels:
        raise ToolError(f"{path}: the model takes {channels} channels, the input has {got}")


def _npy_frames(path: Path, dtype: np.dtype, channels: int | None,
                max_pixels: int) -> FrameSource:
    with open(path, "rb") as handle:
        shape, array_dtype = npy_header(path, handle)
    if array_dtype.fields is not None or array_dtype.kind not in "biuf":
        raise ToolError(f"{path}: {array_dtype} arrays are not read; frames are uint8 "
                        "(or real numbers for a float graph)")
    if dtype == np.uint8 and array_dtype != np.uint8:
        raise ToolError(f"{path}: the graph takes uint8 frames (0-255), the array is "
                        f"{array_dtype}; save the frames as uint8")
    if len(shape) not in (3, 4):
        raise ToolError(f"{path}: expected an (S, C, H, W) or (C, H, W) array, got "
                        f"shape {shape}")
    frame = shape[-3:]
    if frame[0] * frame[1] * frame[2] > 3 * max_pixels:
        raise ToolError(f"{path}: one frame declares shape {frame}, over the budget of "
                        f"{3 * max_pixels:,} values (3 × --max-pixels raises it)")
    _check_channels(path, channels, frame[0])
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ToolError(f"{path}: not a readable .npy array ({first_line(error)})") from None
    if array.ndim == 3:
        array = array[None]

    def batches(size: int) -> Iterator[np.ndarray]:
        for start in range(0, array.shape[0], size):
            yield as_graph_input(array[start:start + size], dtype)

    return FrameSource(str(path), int(array.shape[0]), batches)


def _png_frames(path: Path, dtype: np.dtype, channels: int | None,
                max_pixels: int) -> FrameSource:
    image = read_png(path, max_pixels)
    if channels == 3 and image.shape[2] == 1:
        image = image.repeat(3, axis=2)
    _check_channels(path, channels, image.shape[2])
    frame = image.transpose(2, 0, 1)[None]

    def batches(size: int) -> Iterator[np.ndarray]:
        yield as_graph_input(frame, dtype)

    return FrameSource(str(path), 1, batches)


def open_frames(path: Path, dtype: np.dtype, channels: int | None,
                max_pixels: int) -> FrameSource:
    """The frames of ``path`` (``.npy``, ``.png`` or a video) for a graph taking ``dtype``
    frames of ``channels`` channels (None: any); each frame at most ``max_pixels`` pixels."""
    if not path.is_file():
        raise ToolError(f"input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _npy_frames(path, dtype, channels, max_pixels)
    if suffix == ".png":
        return _png_frames(path, dtype, channels, max_pixels)
    if suffix in VIDEO_SUFFIXES:
        from .video import open_video

        count, batches = open_video(path, channels, max_pixels)
        return FrameSource(str(path), count,
                           lambda size: (as_graph_input(b, dtype) for b in batches(size)))
    raise ToolError(f"{path}: unsupported input type {suffix or '(none)'}; use .npy, .png or "
                    f"a video ({', '.join(VIDEO_SUFFIXES)})")
