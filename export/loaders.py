"""Reading the user's model file: TorchScript, ``torch.export`` (.pt2) or ONNX — never a pickle.

The kind is read from the file's content, not only its name. A ``torch.save`` pickle (a
zip holding ``data.pkl`` but no TorchScript code) is refused without being opened:
unpickling runs arbitrary code from the file. TorchScript archives are loaded with
``torch.jit.load`` (the module's code is TorchScript, not Python, and its pickles hold
only tensors and TorchScript objects; the code can still read and write files, so load
only archives you trust); ``.pt2`` archives with ``torch.export.load`` after
:mod:`.pt2_safety` has checked that nothing in them is unpickled, evaluated or run.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import onnx
import torch

from . import pt2_safety
from .common import ToolError, first_line

KINDS = ("torchscript", "pt2", "onnx")



def detect_kind(path: Path) -> str:
    """``"torchscript"``, ``"pt2"`` or ``"onnx"``; :class:`ToolError` for anything else."""
    if not path.exists():
        raise ToolError(f"model file {path} does not exist")
    if not path.is_file():
        raise ToolError(f"model path {path} is not a file")
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise ToolError(f"{path}: corrupt archive ({first_line(error)})") from None
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
            return "pt2"
        if any("/code/" in n or n.startswith("code/") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            raise ToolError(f"{path} is a torch.save pickle; this tool does not unpickle "
                            "files (that can run arbitrary code): save your model with "
                            "torch.jit.script(model).save(...) or torch.export.save(...)")
        raise ToolError(f"{path} is a zip archive but neither TorchScript nor torch.export")
    if path.suffix.lower() in (".pt", ".pth", ".ts", ".pt2", ".torchscript"):
        raise ToolError(f"{path} is not a valid TorchScript or torch.export archive "
                        "(corrupt or truncated file?)")
    return "onnx"


def load_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:  # a parser of the user's file: any failure means a bad file
        raise ToolError(f"cannot load TorchScript archive {path}: {first_line(error)}") from None


def load_program(path: Path) -> tuple[torch.export.ExportedProgram, tuple[int, ...] | None]:
    """The program and the shape of its stored example input (if any).

    The archive is read once; the bytes checked are the bytes loaded.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ToolError(f"cannot read {path}: {error.strerror}") from None
    pt2_safety.check_archive(data, path)
    try:
        with pt2_safety.safe_loading():
            program = torch.export.load(io.BytesIO(data))
    except Exception as error:  # a parser of the user's file: any failure means a bad file
        raise ToolError(f"cannot load torch.export program {path}: {first_line(error)}") from None
    pt2_safety.check_program(program)
    shape = None
    example = getattr(program, "example_inputs", None)
    if example and example[0] and isinstance(example[0][0], torch.Tensor):
        shape = tuple(example[0][0].shape)
    return program, shape


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # a parser of the user's file: any failure means a bad file
        raise ToolError(f"{path} is not a valid ONNX model ({first_line(error)})") from None
    if not model.graph.output:
        raise ToolError(f"{path}: the ONNX graph has no outputs")
    return model


def parse_shape(text: str | None, default: tuple[int, ...] | None, what: str) -> tuple[int, ...]:
    """``"S,C,H,W"`` or ``"C,H,W"`` (batch 1) → a 4-tuple; else ``default``; else an error."""
    if text is None:
        if default is None:
            raise ToolError(f"cannot infer the input shape of {what}: pass --input-shape C,H,W "
                            "(or S,C,H,W)")
        return default
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(","))
    except ValueError:
        raise ToolError(f"--input-shape must be integers like 3,256,256, got {text!r}") from None
    if len(dims) == 3:
        dims = (1, *dims)
    if len(dims) != 4 or min(dims) < 1:
        raise ToolError(f"--input-shape must be C,H,W or S,C,H,W with positive sizes, got {text!r}")
    return dims
