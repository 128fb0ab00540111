"""The reference library's exported-model format (SPEC §5.5), written out from the SPEC and
the reference's own lists (never taken from the code under test), and one check of a
written directory that the library and the tool tests share.
"""

import json
from pathlib import Path

import onnx
import onnxruntime as ort

# The reference's ExportMetadata fields (sleap_nn/export/metadata.py); SPEC §5.5 names
# model_type ... normalization among them and "null for the keys that do not apply".
REFERENCE_KEYS = {
    "sleap_nn_version", "export_timestamp", "export_format", "model_type", "model_name",
    "checkpoint_path", "backbone", "n_nodes", "n_edges", "node_names", "edge_inds",
    "input_scale", "input_channels", "output_stride", "crop_size", "max_instances",
    "max_peaks_per_node", "max_batch_size", "precision", "peak_threshold", "input_dtype",
    "normalization", "n_classes", "class_names", "anchor_part", "training_config_embedded",
    "training_config_hash",
}

# Output names in order, per model type (SPEC §5.5).
OUTPUT_NAMES = {
    "single_instance": ["peaks", "peak_vals"],
    "centroid": ["centroids", "centroid_vals", "instance_valid"],
    "topdown": ["centroids", "centroid_vals", "peaks", "peak_vals", "instance_valid"],
    "multi_class_topdown_combined": [
        "centroids", "centroid_vals", "peaks", "peak_vals", "class_logits", "instance_valid"
    ],
}


def never_ending_loops(model: onnx.ModelProto) -> list[str]:
    """Names of the ``Loop`` nodes whose continue condition is a constant true: ONNX
    Runtime would run them until the trip count (2**63 - 1), i.e. hang."""
    found = []
    for node in model.graph.node:
        if node.op_type != "Loop":
            continue
        body = next(a.g for a in node.attribute if a.name == "body")
        condition = body.output[0].name
        if condition in {i.name for i in body.input}:
            continue  # the condition is carried through: computed before the loop
        for inner in body.node:
            if condition in inner.output and inner.op_type == "Constant":
                value = onnx.numpy_helper.to_array(inner.attribute[0].t)
                if bool(value.all()):
                    found.append(node.name)
    return found


def check_directory(out: Path, model_type: str, channels: int
                    ) -> tuple[ort.InferenceSession, dict]:
    """Check a written ``out`` against SPEC §5.5: ``model.onnx``'s uint8 ``image (batch,
    C, height, width)`` input, its outputs' names, order and dtypes, no loop that never
    ends, ``export_metadata.json``'s exact key set and constants, the same JSON in
    ``metadata_props["sleap_nn_metadata"]`` and peaklayers' own settings only under other
    keys. Returns an ONNX Runtime session on the model and the metadata."""
    names = OUTPUT_NAMES[model_type]
    model = onnx.load(str(out / "model.onnx"))
    (image,) = model.graph.input
    assert image.name == "image"
    assert image.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert len(dims) == 4 and dims[1].dim_value == channels
    assert all(d.dim_param for i, d in enumerate(dims) if i != 1)
    assert [o.name for o in model.graph.output] == names
    assert never_ending_loops(model) == []

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == names
    for o in session.get_outputs():
        assert o.type == ("tensor(bool)" if o.name == "instance_valid" else "tensor(float)")

    metadata = json.loads((out / "export_metadata.json").read_text())
    assert set(metadata) == REFERENCE_KEYS
    assert metadata["model_type"] == model_type
    assert metadata["input_dtype"] == "uint8" and metadata["normalization"] == "0_to_1"
    assert metadata["input_channels"] == channels
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["sleap_nn_metadata"]) == metadata
    assert all(k.startswith("peaklayers.") for k in set(props) - {"sleap_nn_metadata"})
    return session, metadata
