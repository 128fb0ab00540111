"""export_onnx and export_program keep the exporters' own noise from the user.

Deprecations, constant-folding notes and log lines about optional libraries are internal
to torch.onnx/torch.export; a tracer warning raised in the user's own module is about
their model and is shown, reworded, as ExportWarning at their line.
"""

import logging
import warnings

import pytest
import torch
from torch import nn

import peaklayers
from peaklayers.exporting import ExportWarning


class Head(nn.Module):
    def __init__(self, python_branch: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.python_branch = python_branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.python_branch and x.sum() > 0:  # a tensor turned into a Python bool
            x = x * 1.0
        return torch.sigmoid(self.conv(x))


def _export(model: nn.Module, path, dynamo: bool) -> tuple[list, list]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            peaklayers.export_onnx(model, torch.rand(2, 3, 24, 20), path, dynamo=dynamo)
    finally:
        logging.getLogger().removeHandler(handler)
    return said, [r for r in records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("dynamo", [False, True])
def test_a_clean_model_exports_without_a_word(tmp_path, dynamo):
    model = nn.Sequential(Head(python_branch=False), peaklayers.TopKPeaks(4)).eval()
    said, logged = _export(model, tmp_path / "m.onnx", dynamo)
    assert [str(w.message) for w in said] == [] and logged == []


def test_a_python_value_in_the_users_code_is_an_export_warning(tmp_path):
    model = nn.Sequential(Head(python_branch=True), peaklayers.LocalPeaks()).eval()
    said, _ = _export(model, tmp_path / "m.onnx", dynamo=False)
    assert [w.category for w in said] == [ExportWarning]
    assert said[0].filename == __file__
    assert "the exported graph keeps the example's value" in str(said[0].message)


def test_export_program_is_quiet(tmp_path):
    model = nn.Sequential(Head(python_branch=False), peaklayers.GlobalPeaks()).eval()
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        peaklayers.export_program(model, torch.rand(2, 3, 24, 20))
    assert [str(w.message) for w in said] == []
