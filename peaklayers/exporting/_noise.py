"""The exporters' own warnings and log lines, kept from the user; the ones about the user's
model reworded and shown.

``torch.onnx`` and ``torch.export`` warn about their internals (deprecations, constant
folding, optional operator libraries that are not installed) on every export: nothing
the user can act on. A ``TracerWarning`` raised in the user's own code is different: that
code turned a tensor into a Python value while being traced, so the graph keeps the
example's value there, and may be wrong at other sizes. Those are shown, as
:class:`ExportWarning`, pointing at the user's line.
"""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
_LIBRARIES = tuple(
    str(Path(module.__file__).parent)
    for module in (torch, __import__("peaklayers"))
    if module.__file__ is not None
)


class ExportWarning(UserWarning):
    """The export noticed something in the model that may make the graph wrong."""


def _from_user_code(record: warnings.WarningMessage) -> bool:
    return issubclass(record.category, torch.jit.TracerWarning) and not str(
        record.filename
    ).startswith(_LIBRARIES)


def _reworded(record: warnings.WarningMessage) -> str:
    first_sentence = str(record.message).split(". ")[0].rstrip(".")
    return (
        "the model converts a tensor to a Python value here while it is traced ("
        + first_sentence
        + "): the exported graph keeps the example's value, so it may be wrong for "
        "inputs of other sizes or contents"
    )


@contextlib.contextmanager
def exporter_noise_hidden() -> Iterator[None]:
    """Hide the exporters' warnings and log lines inside the block; afterwards, show the
    tracer's warnings about the user's own code as :class:`ExportWarning`."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    for record in records:
        if _from_user_code(record):
            warnings.warn_explicit(
                _reworded(record), ExportWarning, str(record.filename), record.lineno or 0
            )
