"""Audit of the exported ONNX graphs: which operators they hold, and who can run them.

For every graph exported by the ONNX tests (both exporters, every layer, with and
without refinement, after a head, float16, and with a class-map lookup) this lists the
operator types and checks:

- every operator, at the graph's opset and with the element type it is given, has a
  kernel in ONNX Runtime's CUDA execution provider (``CUDA_EP`` below);
- the ``TopKPeaks`` graphs hold no ``NonZero``, ``Loop``, ``If`` or ``Scan``, every
  ``TopK`` has a constant ``K`` equal to the layer's ``k``, the outputs' K axis is a fixed
  size, and every operator (and its type and restrictions) is accepted by TensorRT's
  ONNX parser (``TENSORRT`` below).

Nothing here runs on a GPU: the lists are the vendors' documentation, kept below with
their sources. Run ``python tests/test_graph_audit.py`` to print the op list of each graph.
"""

import onnx
import pytest
import torch
from onnx import numpy_helper

import class_graphs
from export_helpers import EXPORTERS, KINDS, K, exported

# ONNX Runtime CUDA execution provider: microsoft/onnxruntime docs/OperatorKernels.md,
# section "Operators implemented by CUDAExecutionProvider" (main branch, read for
# onnxruntime 1.31). For each op: the first opset from which a kernel exists without a
# gap up to opset 23, the input that carries the type constraint T, and the types of T
# accepted at every opset from 16 to 23 (the intersection where version ranges differ).
_ALL = {"bfloat16", "bool", "double", "float", "float16", "int16", "int32", "int64", "int8",
        "uint16", "uint32", "uint64", "uint8"}
_NUM = {"bfloat16", "double", "float", "float16", "int16", "int32", "int64", "int8",
        "uint16", "uint32", "uint64", "uint8"}
_CMP = {"double", "float", "float16", "int32", "int64", "uint32", "uint64"}
CUDA_EP = {
    "Add": (7, 0, _NUM),
    "And": (7, 0, {"bool"}),
    # Registered for opset >= 12 only while select_last_index == 0 (checked below);
    # microsoft/onnxruntime#22713 (before it, opset >= 12 ran on the CPU: #13781, #16287).
    "ArgMax": (1, 0, {"double", "float", "float16"}),
    "Cast": (6, 0, _ALL),
    "Clip": (12, 0, {"double", "float", "float16", "int64", "int8", "uint64", "uint8"}),
    "Concat": (4, 0, _ALL),
    "ConstantOfShape": (9, None, _ALL),  # T2 is the output type
    "Conv": (1, 0, {"double", "float", "float16"}),
    "CumSum": (14, 0, {"double", "float", "float16", "int32", "int64", "uint32", "uint64"}),
    "Div": (7, 0, _NUM),
    "Equal": (11, 0, {"bool"} | _CMP),
    "Expand": (8, 0, _ALL),
    "Flatten": (1, 0, _ALL),
    "Floor": (6, 0, {"double", "float", "float16"}),
    "Gather": (1, 0, _ALL),
    "GatherElements": (11, 0, _ALL),
    "GatherND": (11, 0, {"bfloat16", "bool", "double", "float", "float16", "int64"}),
    "Greater": (9, 0, _CMP),
    "GreaterOrEqual": (12, 0, _CMP),
    "GridSample": (16, 0, {"float"}),
    "Identity": (1, 0, _ALL),
    # IsNaN and Round: the class-map lookup (read from the same file's CUDA section).
    "IsNaN": (9, 0, {"bfloat16", "double", "float", "float16"}),
    "Less": (9, 0, _CMP),
    "LessOrEqual": (12, 0, _CMP),
    "Max": (12, 0, {"bfloat16"} | _CMP),
    "MaxPool": (1, 0, {"double", "float", "float16", "int8", "uint8"}),  # flat tops
    "Min": (12, 0, {"bfloat16"} | _CMP),
    "Mod": (10, 0, {"bfloat16"} | _CMP),
    "Mul": (7, 0, _NUM),
    "Neg": (6, 0, {"bfloat16", "double", "float", "float16", "int16", "int32", "int64", "int8"}),
    "NonZero": (9, 0, {"bool", "float", "float16", "int32", "int64", "uint8"}),
    "Not": (1, 0, {"bool"}),
    "Or": (7, 0, {"bool"}),
    "Pad": (2, 0, {"bool", "double", "float", "float16"}),
    "Range": (11, 0, {"double", "float", "int16", "int32", "int64"}),
    "Relu": (6, 0, {"double", "float", "float16"}),
    "ReduceMax": (1, 0, {"double", "float", "float16", "int32", "int64"}),
    "ReduceMin": (1, 0, {"double", "float", "float16", "int32", "int64", "int8", "uint8"}),
    "ReduceSum": (1, 0, {"double", "float", "float16", "int32", "int64"}),
    "Reshape": (5, 0, _ALL),
    "Round": (11, 0, {"double", "float", "float16"}),
    "Shape": (1, 0, _ALL),
    "Slice": (10, 0, _ALL),
    "Squeeze": (1, 0, _ALL),
    "Sub": (7, 0, _NUM),
    "TopK": (10, 0, {"double", "float", "float16", "int32", "int64"}),
    "Transpose": (1, 0, _ALL),
    "Unsqueeze": (1, 0, _ALL),
    "Where": (9, 1, {"double", "float", "float16", "int32", "int64", "uint8"}),  # no bool
}
# Constant nodes need no kernel: ONNX Runtime turns them into initializers when it loads
# the graph, before it assigns nodes to execution providers.
NO_KERNEL = {"Constant"}

# TensorRT's ONNX parser: onnx/onnx-tensorrt docs/operators.md, the TensorRT 10.15
# version ("supports operators in the inclusive range of opset 9 to opset 24"), with
# types as listed there (INT64 is native since TensorRT 10). Restrictions the audit
# checks are noted per op.
_TRT_F = {"float", "float16", "bfloat16"}
_TRT_FI = _TRT_F | {"int32", "int64"}
_TRT_FIB = _TRT_FI | {"bool"}
TENSORRT = {
    "Add": _TRT_FI,
    "And": {"bool"},
    "Cast": _TRT_FIB | {"uint8"},
    "Clip": _TRT_F,  # floating point only: integer clamps must be written otherwise
    "Concat": _TRT_FIB,
    "ConstantOfShape": _TRT_FIB,
    "Conv": _TRT_F,
    "CumSum": _TRT_F,  # `axis` must be a build-time constant
    "Div": _TRT_FI,
    "Equal": _TRT_FI,
    "Expand": _TRT_FIB,
    "Flatten": _TRT_FIB,
    "Floor": _TRT_F,
    "Gather": _TRT_FIB,
    "GatherElements": _TRT_FIB,
    "GatherND": _TRT_FIB,
    "Greater": _TRT_FI,
    "GreaterOrEqual": _TRT_FI,
    "GridSample": {"float", "float16"},  # input must be 4-D
    "Identity": _TRT_FIB,
    # IsNaN and Round (the class-map lookup): only the floating types are listed here, the
    # ones every version of the table accepts for them (TensorRT 8.4's listed FP32, FP16
    # and one integer type each).
    "IsNaN": _TRT_F,
    "Less": _TRT_FI,
    "LessOrEqual": _TRT_FI,
    "Max": _TRT_FI,
    "MaxPool": _TRT_F,  # 2-D or 3-D pooling, no `Indices` output, `dilations` all ones
    "Min": _TRT_FI,
    "Mod": _TRT_FI,
    "Mul": _TRT_FI,
    "Neg": _TRT_FI,
    "Not": {"bool"},
    "Or": {"bool"},
    "Pad": _TRT_FI,
    "Range": _TRT_FI,
    "ReduceMax": _TRT_FI,  # `axes` must be an initializer (all Reduce*)
    "ReduceMin": _TRT_FI,
    "ReduceSum": _TRT_FI,
    "Relu": _TRT_FI,
    "Reshape": _TRT_FIB,
    "Round": _TRT_F,
    "Shape": _TRT_FIB,
    "Slice": _TRT_FIB,
    "Squeeze": _TRT_FIB,  # `axes` must be resolvable to a constant
    "Sub": _TRT_FI,
    "TopK": _TRT_FI,  # `sorted` must be 1; K < 3840 (and a constant, NVIDIA/TensorRT#2678)
    "Transpose": _TRT_FIB,
    "Unsqueeze": _TRT_FIB,  # `axes` must be resolvable to a constant
    "Where": _TRT_FIB,
}
TRT_CONSTANT_INPUTS = {  # op -> index of the input that must be a build-time constant
    "CumSum": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceSum": 1, "Squeeze": 1,
    "Unsqueeze": 1, "TopK": 1,
}
TRT_MAX_K = 3839
TRT_OPSETS = range(9, 25)

FORBIDDEN_IN_TOPK = {"NonZero", "Loop", "If", "Scan"}

GRAPHS = [
    (kind, exporter, refinement, head, dtype, "drop")
    for kind in KINDS
    for exporter in EXPORTERS
    for refinement, head, dtype in [
        ("integral", False, torch.float32),
        (None, False, torch.float32),
        ("integral", True, torch.float32),
        ("integral", False, torch.float16),
        ("integral", True, torch.float16),
    ]
] + [
    (kind, exporter, "integral", False, dtype, "merge")
    for kind in ("local", "topk")
    for exporter in EXPORTERS
    for dtype in (torch.float32, torch.float16)
]


# Class-map lookup graphs (tests/class_graphs.py): head + layer + ClassMapLookup, and the
# two-input peak graph (confmaps, class_maps) the export tool appends to ONNX models.
CLASS_GRAPHS = [
    (kind, exporter, form)
    for kind in ("local", "topk")
    for exporter in EXPORTERS
    for form in class_graphs.FORMS
]


def graph_id(config):
    kind, exporter, refinement, head, dtype, flat_tops = config
    parts = [kind, exporter, str(refinement), "head" if head else "alone", str(dtype)[6:]]
    return "-".join(parts + ([flat_tops] if flat_tops != "drop" else []))


def load(config):
    model = onnx.load(str(exported(*config)))
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _elem_types(model):
    types = {}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return {k: onnx.helper.tensor_dtype_to_np_dtype(v).name if v else None
            for k, v in types.items()}


def _type_name(np_name):
    return {"float32": "float", "float64": "double", "bool": "bool"}.get(np_name, np_name)


def _constants(model):
    """Values of the graph's initializers and Constant nodes, by output name."""
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def opset_of(model):
    return {o.domain: o.version for o in model.opset_import}[""]


def op_types(model):
    return sorted({node.op_type for node in model.graph.node})


def cuda_problems(model):
    opset = opset_of(model)
    types = _elem_types(model)
    problems = []
    for node in model.graph.node:
        if node.op_type in NO_KERNEL:
            continue
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type}: custom domain {node.domain}")
            continue
        if node.op_type not in CUDA_EP:
            problems.append(f"{node.op_type}: no CUDA EP kernel listed")
            continue
        since, index, allowed = CUDA_EP[node.op_type]
        if opset < since:
            problems.append(f"{node.op_type}: CUDA kernel from opset {since}, graph is {opset}")
        name = node.output[0] if index is None else node.input[index]
        dtype = _type_name(types.get(name))
        if dtype not in allowed:
            problems.append(f"{node.op_type} on {dtype}: not a CUDA EP type")
        if node.op_type == "Cast":
            out = _type_name(types.get(node.output[0]))
            if out not in allowed:
                problems.append(f"Cast to {out}: not a CUDA EP type")
        if node.op_type == "ArgMax":
            attrs = {a.name: a.i for a in node.attribute}
            if attrs.get("select_last_index", 0) != 0:
                problems.append("ArgMax with select_last_index: falls back to the CPU")
    return problems


def tensorrt_problems(model):
    types = _elem_types(model)
    constants = _constants(model)
    problems = []
    if opset_of(model) not in TRT_OPSETS:
        problems.append(f"opset {opset_of(model)} outside TensorRT's {TRT_OPSETS}")
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        if node.op_type not in TENSORRT:
            problems.append(f"{node.op_type}: not accepted by TensorRT's ONNX parser")
            continue
        data = node.output[0] if node.op_type == "ConstantOfShape" else node.input[
            1 if node.op_type == "Where" else 0]
        dtype = _type_name(types.get(data))
        if dtype not in TENSORRT[node.op_type]:
            problems.append(f"{node.op_type} on {dtype}: not a TensorRT type for it")
        index = TRT_CONSTANT_INPUTS.get(node.op_type)
        if index is not None and index < len(node.input) and node.input[index]:
            if node.input[index] not in constants:
                problems.append(f"{node.op_type}: input {index} is not a constant")
        if node.op_type == "MaxPool":
            attrs = {a.name: list(a.ints) for a in node.attribute}
            if len(node.output) > 1 and node.output[1]:
                problems.append("MaxPool with an Indices output")
            if len(attrs.get("kernel_shape", [])) not in (2, 3):
                problems.append("MaxPool that is not 2-D or 3-D")
            if any(d != 1 for d in attrs.get("dilations", [])):
                problems.append("MaxPool with dilations")
        if node.op_type == "TopK":
            attrs = {a.name: a.i for a in node.attribute}
            if attrs.get("sorted", 1) != 1:
                problems.append("TopK with sorted=0")
            k = constants.get(node.input[1])
            if k is not None and int(k.reshape(-1)[0]) > TRT_MAX_K:
                problems.append(f"TopK with K={int(k.reshape(-1)[0])} > {TRT_MAX_K}")
    return problems


@pytest.mark.parametrize("config", GRAPHS, ids=[graph_id(c) for c in GRAPHS])
def test_every_op_has_a_cuda_kernel(config):
    model = load(config)
    assert cuda_problems(model) == [], op_types(model)


@pytest.mark.parametrize("config", [c for c in GRAPHS if c[0] == "topk"],
                         ids=[graph_id(c) for c in GRAPHS if c[0] == "topk"])
def test_topk_graph_is_fixed_shape_and_tensorrt_ready(config):
    model = load(config)
    ops = op_types(model)
    assert not FORBIDDEN_IN_TOPK & set(ops), ops
    assert tensorrt_problems(model) == [], ops

    constants = _constants(model)
    top_ks = [node for node in model.graph.node if node.op_type == "TopK"]
    assert top_ks
    for node in top_ks:
        assert node.input[1] in constants, "TopK's K is computed in the graph"
        assert int(constants[node.input[1]].reshape(-1)[0]) == K
    for out in model.graph.output:  # (batch, C, K[, 2]): K is a fixed size of the outputs
        dims = out.type.tensor_type.shape.dim
        assert dims[2].dim_value == K, (out.name, dims)


@pytest.mark.parametrize("config", [c for c in GRAPHS if c[0] != "topk"],
                         ids=[graph_id(c) for c in GRAPHS if c[0] != "topk"])
def test_other_graphs_have_no_control_flow(config):
    """Global and local graphs have no Loop/If/Scan; only local needs NonZero."""
    ops = set(op_types(load(config)))
    assert not {"Loop", "If", "Scan"} & ops
    assert ("NonZero" in ops) == (config[0] == "local")


def _load_class_graph(config):
    model = onnx.load(str(class_graphs.exported(*config)))
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


@pytest.mark.parametrize("config", CLASS_GRAPHS, ids=["-".join(c) for c in CLASS_GRAPHS])
def test_class_lookup_graphs(config):
    """Every op has a CUDA kernel; the top-K ones stay fixed-shape and TensorRT-ready."""
    model = _load_class_graph(config)
    ops = op_types(model)
    assert cuda_problems(model) == [], ops
    assert not {"Loop", "If", "Scan"} & set(ops)
    if config[0] == "topk":
        assert "NonZero" not in ops
        assert tensorrt_problems(model) == [], ops
        for out in model.graph.output:
            assert out.type.tensor_type.shape.dim[2].dim_value == K, out.name


def test_the_audit_can_fail():
    """The checks flag what they must: a bool Where, an int Clip, a computed K."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.INT64, [4])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [4])
    b = helper.make_tensor_value_info("b", TensorProto.BOOL, [4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [4])
    v = helper.make_tensor_value_info("v", TensorProto.INT64, [None])
    nodes = [
        helper.make_node("Where", ["c", "c", "c"], ["b"]),
        helper.make_node("Clip", ["x"], ["y"]),
        helper.make_node("Shape", ["x"], ["k"]),
        helper.make_node("Cast", ["y"], ["yf"], to=TensorProto.FLOAT),
        helper.make_node("TopK", ["yf", "k"], ["v", "i"]),
    ]
    graph = helper.make_graph(nodes, "g", [x, c], [b, y, v])
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    cuda = cuda_problems(model)
    assert any("Where on bool" in p for p in cuda)
    trt = tensorrt_problems(model)
    assert any("Clip on int64" in p for p in trt)
    assert any("TopK: input 1 is not a constant" in p for p in trt)


if __name__ == "__main__":
    for config in GRAPHS:
        model = load(config)
        print(f"{graph_id(config)} (opset {opset_of(model)}): {', '.join(op_types(model))}")
    for config in CLASS_GRAPHS:
        model = _load_class_graph(config)
        print(f"classes-{'-'.join(config)} (opset {opset_of(model)}): "
              f"{', '.join(op_types(model))}")
