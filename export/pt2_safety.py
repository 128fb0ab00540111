"""Reading a ``torch.export`` archive (``.pt2``) without running code from it.

``torch.export.load`` runs text and pickles from the file in several places: it unpickles
the sample inputs (falling back to full unpickling when the safe loader refuses them) and
any weight or constant saved with pickle, loads compiled AOTInductor libraries, evaluates
the symbolic size expressions with ``sympy.sympify`` (``eval``), compiles the stored guard
code with ``exec``, and imports modules named in the input/output tree specs. A
confidence-map head needs none of that beyond plain tensors and integer arithmetic, so the
archive is read here first and refused when any of those places holds more; the load
itself then runs on the checked bytes with ``torch.load`` forced to ``weights_only``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from .common import ToolError

# Members torch.export.load reads as plain text or raw tensor bytes.
_PLAIN = re.compile(r"(archive_format|archive_version|byteorder|\.data/[\w./-]+|extra/.+"
                    r"|data/(weights|constants)/[\w.-]+)$")
_MODEL = re.compile(r"models/(\w+)\.json$")
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/(\w+)\.pt$")
_CONFIG = re.compile(r"data/(weights|constants)/(\w+)_(weights|constants)_config\.json$")

_SYMPY_NAMES = {
    "Integer", "Symbol", "Mul", "Add", "Pow", "Rational", "Float", "Max", "Min", "Mod",
    "floor", "ceiling", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or",
    "Not", "Piecewise", "ExprCondPair", "true", "false", "BooleanTrue", "BooleanFalse",
    "oo", "zoo", "nan", "Infinity", "NegativeInfinity", "NaN", "Half", "One", "Zero",
    "NegativeOne", "positive", "negative", "nonnegative", "nonpositive", "integer", "real",
    "finite", "commutative", "precision", "evaluate", "True", "False",
}
_GUARD_NAMES = {"and", "or", "not", "True", "False", "inf", "math", "isnan", "isinf", "max",
                "min", "abs", "int", "float", "round", "bool",
                "floor", "ceil", "trunc", "sqrt", "size", "stride", "storage_offset",
                "IsNonOverlappingAndDenseIndicator", "torch", "sym_max", "sym_min",
                "sym_float", "sym_int", "sym_not", "sym_sqrt"}
_SYMBOL = re.compile(r"[a-z]{1,8}\d+$")  # s0, u3, zuf1: the names ShapeEnv gives sizes
_TOKEN = re.compile(r"""\s+|\d+(\.\d+)?(e[-+]?\d+)?|'[\w.+-]*'|[A-Za-z_]\w*|\*\*|//|[=!<>]=
                        |[-+*/%(),=<>.\[\]]""", re.VERBOSE)
_SPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict",
               "collections.OrderedDict"}
_TARGET = re.compile(r"(torch\.ops\.(aten|prims)\.\w+\.\w+"
                     r"|torch\.ops\.higher_order\.(cond|while_loop|map_impl|scan|wrap_with_set_grad_enabled|wrap_with_autocast)"
                     r"|_operator\.(getitem|add|sub|mul|floordiv|truediv|mod|pow|neg|eq|ne"
                     r"|lt|le|gt|ge|and_|or_|not_)|math\.\w+|torch\.sym_\w+|torch\._sym_\w+)$")
_FILE_OPS = {"from_file"}  # aten ops that touch the file system


def _names(text: str, what: str) -> list[str]:
    """The identifiers of ``text``, which must consist of arithmetic tokens only."""
    if len(text) > 10_000:
        raise ToolError(f"refused: a {what} in the archive is {len(text)} characters long")
    pos, names = 0, []
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ToolError(f"refused: the archive's {what} {text[:60]!r} is not plain "
                            "arithmetic (torch would evaluate it as Python code)")
        if re.fullmatch(r"[A-Za-z_]\w*", match.group()):
            names.append(match.group())
        pos = match.end()
    return names


def _check_sympy(text: str) -> None:
    """A size expression as torch writes it (``srepr``) calls sympy constructors only."""
    for name in _names(text, "size expression"):
        if name not in _SYMPY_NAMES and not _SYMBOL.match(name) and name not in _sympy_funcs():
            raise ToolError(f"refused: the archive's size expression {text[:60]!r} uses "
                            f"{name!r} (torch would evaluate it as Python code)")


def _check_guard(text: str) -> None:
    """A guard compares input sizes (``L['x'].size()[2] >= 8``) and nothing else."""
    plain = re.sub(r"L\['\w+'\]", " 0 ", text)
    if "L[" in plain or "'" in plain or "\n" in text:
        raise ToolError(f"refused: the archive's guard {text[:60]!r} is not a size check "
                        "(torch would run it as Python code)")
    for name in _names(plain, "guard"):
        if name not in _GUARD_NAMES:
            raise ToolError(f"refused: the archive's guard {text[:60]!r} uses {name!r} "
                            "(torch would run it as Python code)")


@functools.cache
def _sympy_funcs() -> frozenset[str]:
    import sympy
    from torch.utils._sympy import functions

    return frozenset(name for name, obj in vars(functions).items()
                     if isinstance(obj, type) and issubclass(obj, sympy.Basic))


def _check_spec(text: str) -> None:
    """An input/output tree spec may only nest tuples, lists and dicts (other types make
    torch import the module they name)."""
    if "__enum__" in text or "default_factory" in text:
        raise ToolError("refused: the archive's input/output structure names Python types")

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "type" in node and node["type"] not in _SPEC_TYPES:
                raise ToolError(f"refused: the archive's inputs or outputs are a "
                                f"{node['type']!r}; a head takes and returns tensors, tuples, "
                                "lists or dicts")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        walk(json.loads(text))
    except json.JSONDecodeError:
        raise ToolError("refused: the archive's input/output structure is not JSON") from None


def _check_model(node: object) -> None:
    """Every field of a model's JSON that torch evaluates, runs or imports from."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr_str" and isinstance(value, str):
                _check_sympy(value)
            elif key == "guards_code":
                for guard in value or []:
                    _check_guard(str(guard))
            elif key in ("in_spec", "out_spec") and isinstance(value, str):
                _check_spec(value)
            elif key == "treespec_namedtuple_fields" and value:
                raise ToolError("refused: the archive's inputs or outputs are named tuples")
            elif key == "target" and isinstance(value, str) and not _TARGET.match(value):
                raise ToolError(f"refused: the archive's graph calls {value[:80]!r}, not a "
                                "tensor operator")
            else:
                _check_model(value)
    elif isinstance(node, list):
        for value in node:
            _check_model(value)


def _check_config(data: bytes, folder: str) -> None:
    """Weights and constants must be raw tensor bytes, never pickles or Python objects."""
    entries = json.loads(data).get("config", {})
    for name, entry in entries.items():
        if entry.get("use_pickle") or (folder == "constants" and not str(
                entry.get("path_name", "")).startswith("tensor_")):
            raise ToolError(f"refused: the archive's {folder[:-1]} {name!r} is a pickled "
                            "object (unpickling runs code from the file); save plain tensors")


def _check_sample_inputs(data: bytes) -> None:
    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as error:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"they name {named.group(1)}" if named else type(error).__name__
        raise ToolError("refused: the archive's sample inputs are not plain tensors "
                        f"({what}; unpickling them would run code from the file)") from None


def check_archive(data: bytes, path: Path) -> None:
    """Raise :class:`ToolError` unless the archive ``data`` loads without running its code."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise ToolError(f"{path}: corrupt archive ({error})") from None
    names = [i.filename for i in infos if not i.is_dir()]
    root = names[0].split("/")[0] if names else ""
    if len(set(names)) != len(names):
        raise ToolError(f"refused: {path} holds two members of the same name")
    for full in names:
        if not full.startswith(root + "/"):
            raise ToolError(f"refused: {path} has members outside its root folder")
        name = full[len(root) + 1:]
        try:
            if _MODEL.match(name):
                _check_model(json.loads(archive.read(full)))
            elif _CONFIG.match(name):
                _check_config(archive.read(full), _CONFIG.match(name).group(1))
            elif _SAMPLE_INPUTS.match(name):
                _check_sample_inputs(archive.read(full))
            elif name.startswith("data/aotinductor/"):
                raise ToolError(f"refused: {path} holds compiled AOTInductor code; export the "
                                "program without AOTInductor")
            elif re.fullmatch(r"data/(weights|constants)/\w+\.pt", name) or not _PLAIN.match(
                    name):
                raise ToolError(f"refused: {path} holds {name!r}, which torch.export.load "
                                "would unpickle or run (only plain tensors are loaded)")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise ToolError(f"{path}: corrupt archive member {name!r}") from None
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
            raise ToolError(f"{path}: corrupt archive ({error})") from None


def check_program(program: torch.export.ExportedProgram) -> None:
    """Refuse graphs that call operators touching files (the loaded graph, before it runs)."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if graph is not None else ():
            target = node.target
            if (node.op == "call_function" and isinstance(target, torch._ops.OpOverload)
                    and target._schema.name.split("::")[-1] in _FILE_OPS):
                raise ToolError(f"refused: the program calls {target}, which reads files")


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """``torch.load`` forced to ``weights_only`` and torch's loader warnings kept quiet."""
    saved = {k: os.environ.get(k) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                             "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
