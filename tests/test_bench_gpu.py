"""The GPU benchmark's CPU smoke mode: the script runs end to end and its parity check
can fail. (Its timings are not checked: speed belongs to the benchmarks.)"""

import importlib.util
import json
from pathlib import Path

import torch

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_gpu.py"


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_writes_results(tmp_path):
    bench = _bench_gpu()
    layer = "TopKPeaks + ClassMapLookup"
    assert bench.main(["--cpu-smoke", "--out", str(tmp_path), "--layers", layer]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    backends = {row["backend"] for row in result["parity"]}
    assert backends == {"eager", "TorchScript", "torch.export", "ORT CPU (stand-in)"}
    assert all(row["parity"] == "ok" for row in result["parity"])
    assert result["not_loaded"] == {}  # nothing failed to build or to time
    [placed] = result["nodes_by_provider"]
    assert placed["backend"] == "ORT CPU (stand-in)"
    assert list(placed["nodes"]) == ["CPUExecutionProvider"]
    assert placed["nodes"]["CPUExecutionProvider"] > 0
    timed = {(row["operation"], row["backend"]) for row in result["timings"]}
    assert {(layer, backend) for backend in backends} <= timed
    assert ("cms.clone() (floor)", "") in timed
    assert "| TopKPeaks + ClassMapLookup | torch.export | ok |" in (
        tmp_path / "results.md"
    ).read_text()


def test_every_map_fits_the_graphs_channels():
    # Graphs and programs keep the example's channel count: a timing shape with another
    # one would fail on the GPU (in every ONNX Runtime and torch.export row).
    bench = _bench_gpu()
    channels = bench.example_maps().shape[1]
    shapes = bench.GPU_SHAPES + bench.SMOKE_SHAPES
    shapes += [tuple(cms.shape) for _, cms in bench.parity_cases()]
    assert {shape[1] for shape in shapes} == {channels}


def test_tensorrt_profile_spans_every_shape():
    bench = _bench_gpu()
    chain = bench._provider_chain(
        bench.TENSORRT_EP, {"confmaps": [(2, 17, 40, 48), (1, 17, 96, 20), (8, 17, 9, 192)]}
    )
    provider, options = chain[0]
    assert provider == bench.TENSORRT_EP
    assert options["trt_profile_min_shapes"] == "confmaps:1x17x9x20"
    assert options["trt_profile_max_shapes"] == "confmaps:8x17x96x192"
    assert chain[1:] == [bench.CUDA_EP, bench.CPU_EP]


def test_parity_check_sees_differences():
    compare = _bench_gpu().compare
    points = torch.tensor([[1.0, float("nan")]])
    assert compare((points, torch.tensor([3])), (points.clone(), torch.tensor([3]))) == ""
    assert compare((points + 2e-5, torch.tensor([3])), (points, torch.tensor([3])))
    assert compare((points, torch.tensor([4])), (points, torch.tensor([3])))
    assert compare((torch.zeros(1, 2), torch.tensor([3])), (points, torch.tensor([3])))
    assert compare((points,), (points, torch.tensor([3])))
