"""GPU parity and timing of every peak layer and of the class-map lookup, in one command.

Run from the repository root on a machine with a CUDA build of PyTorch::

    python benchmarks/bench_gpu.py --out gpu-results

(a) Parity: on the parity cases, every layer (and a top-K layer followed by a
    :class:`~peaklayers.ClassMapLookup`) runs in CUDA eager PyTorch, CUDA TorchScript,
    the CUDA ``torch.export`` program, ONNX Runtime's CUDA execution provider and its
    TensorRT provider (graphs from the TorchScript-based exporter), each only where it
    loads; the outputs are compared with CPU eager PyTorch: exactly for values, indices,
    masks and class probabilities, to 1e-5 px for points. A backend that does not load
    is listed with the reason. For the ONNX Runtime sessions, the nodes each execution
    provider ran (from one profiled run) are listed too: a provider that loads may still
    leave nodes to the CPU.
(b) Timing: each layer at (1, 17, 96, 96), (8, 17, 192, 192) and (32, 17, 128, 128),
    float32 Gaussian-blob maps, medians of CUDA-event timings after warm-up, beside one
    ``cms.clone()`` on the GPU measured the same way. ONNX Runtime runs through IO
    binding on tensors already on the device, so no host copy is timed.
(c) ``results.json`` and ``results.md`` (Markdown tables) in the output folder.

The graphs and programs have a fixed channel count (that of the example they were made
from), so every map here has :data:`CHANNELS` channels.

``--cpu-smoke`` runs the same code on the CPU with small shapes and few repeats (ONNX
Runtime's CPU provider stands in for the GPU providers): a check that the script works,
used by the test suite; its numbers mean nothing.
"""

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peaks import confidence_maps  # noqa: E402

from peaklayers import (  # noqa: E402
    ClassMapLookup,
    GlobalPeaks,
    LocalPeaks,
    TopKPeaks,
    export_onnx,
    export_program,
)

CHANNELS = 17
GPU_SHAPES = [(1, CHANNELS, 96, 96), (8, CHANNELS, 192, 192), (32, CHANNELS, 128, 128)]
SMOKE_SHAPES = [(1, CHANNELS, 24, 20)]
CLASSES = 4
PX = 1e-5


class TopKWithClasses(nn.Module):
    """Top-K peaks, then the class probabilities of their slots."""

    def __init__(self) -> None:
        super().__init__()
        self.peaks = TopKPeaks(8)
        self.lookup = ClassMapLookup()

    def forward(self, cms: torch.Tensor, class_maps: torch.Tensor):
        points, vals, valid = self.peaks(cms)
        return points, vals, valid, self.lookup(class_maps, points)


LAYERS = {
    "GlobalPeaks": lambda: GlobalPeaks(),
    "LocalPeaks": lambda: LocalPeaks(),
    "TopKPeaks(k=8)": lambda: TopKPeaks(8),
    "TopKPeaks(k=8, merge)": lambda: TopKPeaks(8, flat_tops="merge"),
    "TopKPeaks + ClassMapLookup": TopKWithClasses,
}


def class_maps_for(cms: torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (cms.shape[0], CLASSES, cms.shape[2], cms.shape[3])
    return torch.softmax(3 * torch.randn(shape, generator=gen), dim=1)


def inputs_for(name: str, cms: torch.Tensor) -> tuple:
    return (cms, class_maps_for(cms)) if "ClassMap" in name else (cms,)


def parity_cases() -> list:
    """Maps with several peaks, flat tops (half-precision rounding), borders, noise."""
    blobs = confidence_maps((2, CHANNELS, 40, 48), peaks=3, sigma=1.7, seed=1)
    flat = (confidence_maps((2, CHANNELS, 33, 29), peaks=3, seed=2) * 8).round() / 8
    gen = torch.Generator().manual_seed(3)
    noise = torch.rand(1, CHANNELS, 17, 23, generator=gen)
    return [("blobs", blobs), ("flat tops", flat), ("noise", noise)]


def example_maps() -> torch.Tensor:
    """The maps every backend is built from (graphs keep batch, height, width dynamic)."""
    return confidence_maps((2, CHANNELS, 40, 48), seed=4)


# --- backends: each turns (layer, example inputs, device) into a callable or raises ---


def _eager(layer, examples, device):
    layer = layer.to(device)
    return lambda *xs: layer(*xs)


def _torchscript(layer, examples, device):
    scripted = torch.jit.script(layer.to(device))
    return lambda *xs: scripted(*xs)


def _program(layer, examples, device):
    layer = layer.to(device)
    module = export_program(layer, tuple(x.to(device) for x in examples)).module()
    return lambda *xs: module(*xs)


CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def _provider_chain(provider: str, input_shapes: dict) -> list:
    """The providers a session is opened with, first choice first.

    TensorRT gets one optimisation profile spanning every shape this script runs
    (otherwise it builds a new engine for each new shape), its engines cached in a
    temporary folder, and CUDA then the CPU for the nodes it does not take.
    """
    if provider == CPU_EP:
        return [CPU_EP]
    if provider == CUDA_EP:
        return [CUDA_EP, CPU_EP]

    def profile(pick):
        return ",".join(
            f"{name}:" + "x".join(str(pick(dims)) for dims in zip(*shapes, strict=True))
            for name, shapes in input_shapes.items()
        )

    options = {
        "trt_profile_min_shapes": profile(min),
        "trt_profile_max_shapes": profile(max),
        "trt_profile_opt_shapes": profile(max),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": tempfile.mkdtemp(prefix="bench-gpu-trt-"),
    }
    return [(TENSORRT_EP, options), CUDA_EP, CPU_EP]


def _nodes_by_provider(path: Path, providers: list, feeds: dict) -> dict:
    """How many nodes each execution provider ran, from one profiled run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=providers)
    session.run(None, feeds)
    trace = Path(session.end_profiling())
    counts: dict = {}
    for event in json.loads(trace.read_text()):
        args = event.get("args", {})
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            provider = args.get("provider", "?")
            counts[provider] = counts.get(provider, 0) + 1
    trace.unlink()
    return counts


def _ort(provider):
    def build(layer, examples, device):
        import onnx
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider not in available:
            raise RuntimeError(f"{provider} not in this onnxruntime ({', '.join(available)})")
        path = Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "layer.onnx"
        export_onnx(layer, examples, path)
        names = [i.name for i in onnx.load(str(path)).graph.input]
        every = _all_inputs(examples)
        shapes = {name: [tuple(inputs[i].shape) for inputs in every]
                  for i, name in enumerate(names)}
        chain = _provider_chain(provider, shapes)
        session = ort.InferenceSession(str(path), providers=chain)
        if session.get_providers()[0] != provider:
            raise RuntimeError(f"{provider} did not load (session uses "
                               f"{session.get_providers()})")
        feeds = {n: x.numpy() for n, x in zip(names, examples, strict=True)}
        run = _bound_run(session, names, device)
        run.nodes_by_provider = _nodes_by_provider(path, chain, feeds)
        return run

    return build


def _all_inputs(examples) -> list:
    """Every input tuple this script gives a layer built from ``examples``: the
    example, the parity cases, and the timing shapes of both modes."""
    every = [tuple(examples)]
    maps = [cms for _, cms in parity_cases()]
    maps += [torch.empty(shape) for shape in GPU_SHAPES + SMOKE_SHAPES]
    for cms in maps:
        every.append(tuple(
            cms if i == 0 else torch.empty(cms.shape[0], x.shape[1], *cms.shape[2:])
            for i, x in enumerate(examples)
        ))
    return every


def _bound_run(session, names, device):
    """``session`` run through IO binding on tensors already on ``device``: inputs are
    bound in place, outputs stay on the device until :meth:`to_cpu` is asked for."""
    from peaklayers.runtime import ELEMENT_TYPES

    onnx_types = {element.torch: element.onnx for element in ELEMENT_TYPES}
    kind, index = device.type, device.index or 0

    def run(*xs):
        binding = session.io_binding()
        for name, x in zip(names, xs, strict=True):
            x = x.contiguous()
            binding.bind_input(name, kind, index, onnx_types[x.dtype], tuple(x.shape),
                               x.data_ptr())
        for output in session.get_outputs():
            binding.bind_output(output.name, kind, index)
        session.run_with_iobinding(binding)
        return binding

    def run_to_cpu(*xs):
        binding = run(*xs)
        return tuple(torch.from_numpy(o) for o in binding.copy_outputs_to_cpu())

    run.to_cpu = run_to_cpu
    return run


def backends(smoke: bool) -> dict:
    if smoke:
        return {
            "eager": _eager,
            "TorchScript": _torchscript,
            "torch.export": _program,
            "ORT CPU (stand-in)": _ort(CPU_EP),
        }
    return {
        "CUDA eager": _eager,
        "CUDA TorchScript": _torchscript,
        "CUDA torch.export": _program,
        "ORT CUDA EP": _ort(CUDA_EP),
        "ORT TensorRT EP": _ort(TENSORRT_EP),
    }


def _as_list(outputs) -> list:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def compare(actual, expected) -> str:
    """'' when ``actual`` matches ``expected`` (CPU eager), else what differs."""
    actual, expected = _as_list(actual), _as_list(expected)
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a = a.detach().cpu()
        if a.shape != e.shape:
            return f"output {i}: shape {tuple(a.shape)}, expected {tuple(e.shape)}"
        if e.dtype == torch.bool or not e.is_floating_point():
            if not torch.equal(a.to(e.dtype), e):
                return f"output {i}: {int((a.to(e.dtype) != e).sum())} elements differ"
            continue
        a, e = a.double(), e.double()
        if not torch.equal(a.isnan(), e.isnan()):
            return f"output {i}: NaN in different places"
        tol = PX if i == 0 else 0.0  # points first; values and probabilities exact
        diff = (a.nan_to_num() - e.nan_to_num()).abs().max().item() if a.numel() else 0.0
        if diff > tol:
            return f"output {i}: max difference {diff:g} > {tol:g}"
    return ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, args, device, warmup, repeats) -> float:
    """Median of ``repeats`` timed calls after ``warmup`` calls (CUDA events on a GPU)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*args)
        sync(device)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn(*args)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                start = time.perf_counter()
                fn(*args)
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def build_all(layer_name, examples, device, builds, failures):
    """Callables of every backend that loads; failures[backend] gets why one did not."""
    built = {}
    for backend, build in builds.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                built[backend] = build(LAYERS[layer_name]().eval(), examples, device)
        except Exception as error:  # a backend that does not load is reported, not fatal
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            failures.setdefault(backend, {})[layer_name] = reason
    return built


def parity(built_layers, device) -> list:
    rows = []
    for layer_name, built in built_layers.items():
        cases = [(case, inputs_for(layer_name, cms)) for case, cms in parity_cases()]
        reference = LAYERS[layer_name]().eval()
        for backend, fn in built.items():
            problems = []
            for case, xs in cases:
                with torch.inference_mode():
                    expected = _as_list(reference(*xs))
                    try:
                        got = getattr(fn, "to_cpu", fn)(*(x.to(device) for x in xs))
                        sync(device)
                        problem = compare(got, expected)
                    except Exception as error:
                        problem = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                if problem:
                    problems.append(f"{case}: {problem}")
            rows.append({"layer": layer_name, "backend": backend,
                         "parity": "ok" if not problems else "; ".join(problems)})
    return rows


def timings(built_layers, device, failures, shapes, warmup, repeats) -> list:
    rows = []
    for shape in shapes:
        cms = confidence_maps(shape)
        clone = median_ms(lambda x: x.clone(), (cms.to(device),), device, warmup, repeats)
        rows.append({"shape": list(shape), "operation": "cms.clone() (floor)",
                     "backend": "", "ms": clone, "clones": 1.0})
        for layer_name, built in built_layers.items():
            xs = tuple(x.to(device) for x in inputs_for(layer_name, cms))
            for backend, fn in built.items():
                try:
                    ms = median_ms(fn, xs, device, warmup, repeats)
                except Exception as error:
                    failures.setdefault(backend, {})[layer_name] = (
                        f"timing {shape}: {type(error).__name__}: {str(error).splitlines()[0]}"
                    )
                    continue
                rows.append({"shape": list(shape), "operation": layer_name, "backend": backend,
                             "ms": ms, "clones": ms / clone})
    return rows


def markdown(result) -> str:
    lines = [f"Device: {result['device']}; torch {result['torch']}, onnxruntime "
             f"{result['onnxruntime']}.", "", "Parity with CPU eager PyTorch:", "",
             "| layer | backend | parity |", "|---|---|---|"]
    lines += [f"| {r['layer']} | {r['backend']} | {r['parity']} |" for r in result["parity"]]
    lines += ["", "Nodes each ONNX Runtime execution provider ran (one profiled run):", "",
              "| layer | backend | nodes by provider |", "|---|---|---|"]
    lines += [f"| {r['layer']} | {r['backend']} | "
              + ", ".join(f"{p}: {n}" for p, n in sorted(r["nodes"].items())) + " |"
              for r in result["nodes_by_provider"]]
    lines += ["", "Timings (medians; 'clones' = time / one cms.clone() on the same device):",
              "", "| shape | operation | backend | ms | clones |", "|---|---|---|---|---|"]
    lines += [f"| {tuple(r['shape'])} | {r['operation']} | {r['backend']} | {r['ms']:.3f} "
              f"| {r['clones']:.1f} |" for r in result["timings"]]
    if result["not_loaded"]:
        lines += ["", "Backends that did not load (layer: reason):", ""]
        for backend, reasons in result["not_loaded"].items():
            for layer, reason in reasons.items():
                lines.append(f"- {backend}, {layer}: {reason}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-results", help="output folder")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="CPU only, small shapes, few repeats (a test of the script)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--layers", nargs="*", choices=list(LAYERS), default=list(LAYERS),
                        help="only these layers (default: all)")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        device, shapes, warmup, repeats = torch.device("cpu"), SMOKE_SHAPES, 1, 3
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --cpu-smoke for the CPU smoke test",
                  file=sys.stderr)
            return 2
        device, shapes, warmup, repeats = torch.device("cuda"), GPU_SHAPES, 5, args.repeats
    try:
        import onnxruntime as ort

        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    builds = backends(args.cpu_smoke)
    failures: dict = {}
    started = time.perf_counter()
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}), smoke test",
        "torch": torch.__version__,
        "onnxruntime": ort_version,
    }
    # Every backend is built once per layer, from a small example (graphs are dynamic).
    example = example_maps()
    built_layers = {
        name: build_all(name, inputs_for(name, example), device, builds, failures)
        for name in args.layers
    }
    result["parity"] = parity(built_layers, device)
    result["nodes_by_provider"] = [
        {"layer": layer, "backend": backend, "nodes": fn.nodes_by_provider}
        for layer, built in built_layers.items()
        for backend, fn in built.items()
        if hasattr(fn, "nodes_by_provider")
    ]
    result["timings"] = timings(built_layers, device, failures, shapes, warmup, repeats)
    result["not_loaded"] = failures
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=_plain))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    bad = [r for r in result["parity"] if r["parity"] != "ok"]
    return 1 if bad else 0


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value).__name__)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(3)
