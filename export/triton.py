"""A Triton Inference Server model repository for an exported ONNX graph, and its validation.

Layout: ``DIR/<name>/config.pbtxt`` and ``DIR/<name>/1/model.onnx``. The config is
parsed back against Triton's published ``ModelConfig`` protobuf schema (shipped by the
``tritonclient`` package as ``tritonclient/grpc/model_config_pb2.py``) and checked
against the ONNX graph's inputs and outputs.

Batching: with ``max_batch_size > 0`` Triton requires every input and output to start
with the batch axis, which it leaves out of ``dims``. Global and top-K graphs have it; the
variable-length local-peak graph does not (its outputs are ``(n_peaks, ...)`` over the
whole batch), so it is written with ``max_batch_size: 0`` and full shapes, without dynamic
batching: serve ``--layer topk`` when requests should be batched. The same holds for a
model whose own batch size is fixed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import onnx

from .common import ToolError

DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
          "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8"}
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
               onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.INT32: "int32",
               onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool",
               onnx.TensorProto.UINT8: "uint8"}


def _dims(shape: list, batched: bool) -> list[int]:
    dims = [d if isinstance(d, int) else -1 for d in shape]
    return dims[1:] if batched else dims


def _tensor(name: str, dtype: str, dims: list[int]) -> str:
    return (f'  {{\n    name: "{name}"\n    data_type: {DTYPES[dtype]}\n'
            f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}")


def config_text(name: str, meta: dict, max_batch_size: int, instances: int, kind: str) -> str:
    """``config.pbtxt`` text for the graph described by ``meta`` (see report.metadata)."""
    # A model with a fixed batch size (e.g. an ONNX head exported for batch 1) cannot be
    # batched by Triton either.
    batched = (all(t["shape"][0] == "batch" for t in meta["outputs"]) and max_batch_size > 0
               and meta["inputs"][0]["shape"][0] == "batch")
    inputs = [_tensor(t["name"], t["dtype"], _dims(t["shape"], batched)) for t in meta["inputs"]]
    outputs = [_tensor(t["name"], t["dtype"], _dims(t["shape"], batched))
               for t in meta["outputs"]]
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batched else 0}",
        "input [\n" + ",\n".join(inputs) + "\n]",
        "output [\n" + ",\n".join(outputs) + "\n]",
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}\n]",
    ]
    if batched:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 100\n}")
    return "\n".join(lines) + "\n"


def model_config_class():
    """Triton's ``inference.ModelConfig`` message class, from the ``tritonclient`` package.

    ``tritonclient.grpc``'s ``__init__`` imports grpcio, which only the client needs; the
    generated schema module itself needs protobuf alone, so it is loaded from its file.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ToolError("validating a Triton config needs the tritonclient package "
                        "(pip install tritonclient, or pip install -e '.[dev]')")
    path = Path(next(iter(spec.submodule_search_locations)), "grpc", "model_config_pb2.py")
    module_spec = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig


def parse_config(text: str):
    """Parse ``config.pbtxt`` text into Triton's ``ModelConfig``; ToolError if it does not fit."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, model_config_class()())
    except text_format.ParseError as error:
        raise ToolError(f"config.pbtxt does not parse as Triton's ModelConfig: {error}") from None


def check_against_onnx(config, model: onnx.ModelProto) -> None:
    """Names, dtypes and ranks in the config must match the ONNX graph."""
    batched = config.max_batch_size > 0
    pairs = ((config.input, model.graph.input), (config.output, model.graph.output))
    for declared, actual in pairs:
        graph = {v.name: v for v in actual}
        for tensor in declared:
            if tensor.name not in graph:
                raise ToolError(f"config.pbtxt names {tensor.name!r}, not in the ONNX graph")
            value = graph[tensor.name].type.tensor_type
            dtype = DTYPES.get(ONNX_DTYPES.get(value.elem_type, ""), "?")
            type_name = config.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
                "data_type"].enum_type.values_by_number[tensor.data_type].name
            if type_name != dtype:
                raise ToolError(f"config.pbtxt gives {tensor.name!r} {type_name}, "
                                f"the ONNX graph {dtype}")
            rank = len(value.shape.dim)
            if len(tensor.dims) + batched != rank:
                raise ToolError(f"config.pbtxt gives {tensor.name!r} rank "
                                f"{len(tensor.dims) + batched}, the ONNX graph {rank}")


def write_repository(root: Path, name: str, onnx_path: Path, meta: dict, *, max_batch_size: int,
                     instances: int, kind: str):
    """Write ``root/name/{config.pbtxt, 1/model.onnx}``; return the parsed, checked config."""
    text = config_text(name, meta, max_batch_size, instances, kind)
    config = parse_config(text)
    check_against_onnx(config, onnx.load(str(onnx_path), load_external_data=False))
    (root / name / "1").mkdir(parents=True)
    shutil.copyfile(onnx_path, root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(text)
    return config
