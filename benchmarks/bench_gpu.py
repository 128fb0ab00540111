"""GPU parity and timing of every peak layer and of the class-map lookup, in one command.

Run from the repository root on a machine with a CUDA build of PyTorch::

    python benchmarks/bench_gpu.py --out gpu-results

(a) Parity: on the parity cases, every layer (and a top-K layer followed by a
    :class:`~peaklayers.ClassMapLookup`) runs in CUDA eager PyTorch, CUDA TorchScript,
    the CUDA ``torch.export`` program, ONNX Runtime's CUDA execution provider and its
    TensorRT provider (graphs from the TorchScript-based exporter), each only where it
    loads; the outputs are compared with CPU eager PyTorch: exactly for values, indices,
    masks and class probabilities, to 1e-5 px for points. A backend that does not load
    is listed with the reason.
(b) Timing: each layer at (1, 17, 96, 96), (8, 17, 192, 192) and (32, 17, 128, 128),
    float32 Gaussian-blob maps, medians of CUDA-event timings after warm-up, beside one
    ``cms.clone()`` on the GPU measured the same way.
(c) ``results.json`` and ``results.md`` (Markdown tables) in the output folder.

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

GPU_SHAPES = [(1, 17, 96, 96), (8, 17, 192, 192), (32, 17, 128, 128)]
SMOKE_SHAPES = [(1, 3, 24, 20)]
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
    blobs = confidence_maps((2, 3, 40, 48), peaks=3, sigma=1.7, seed=1)
    flat = (confidence_maps((2, 3, 33, 29), peaks=3, seed=2) * 8).round() / 8
    gen = torch.Generator().manual_seed(3)
    noise = torch.rand(1, 3, 17, 23, generator=gen)  # channels are fixed in the graphs
    return [("blobs", blobs), ("flat tops", flat), ("noise", noise)]


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


def _ort(provider):
    def build(layer, examples, device):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider not in available:
            raise RuntimeError(f"{provider} not in this onnxruntime ({', '.join(available)})")
        path = Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "layer.onnx"
        export_onnx(layer, examples, path)
        session = ort.InferenceSession(str(path), providers=[provider])
        if session.get_providers()[0] != provider:
            raise RuntimeError(f"{provider} did not load (session uses "
                               f"{session.get_providers()})")
        names = [i.name for i in session.get_inputs()]

        def run(*xs):
            feeds = {n: x.detach().cpu().numpy() for n, x in zip(names, xs, strict=True)}
            return tuple(torch.from_numpy(o) for o in session.run(None, feeds))

        return run

    return build


def backends(smoke: bool) -> dict:
    if smoke:
        return {
            "eager": _eager,
            "TorchScript": _torchscript,
            "torch.export": _program,
            "ORT CPU (stand-in)": _ort("CPUExecutionProvider"),
        }
    return {
        "CUDA eager": _eager,
        "CUDA TorchScript": _torchscript,
        "CUDA torch.export": _program,
        "ORT CUDA EP": _ort("CUDAExecutionProvider"),
        "ORT TensorRT EP": _ort("TensorrtExecutionProvider"),
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
                        got = fn(*(x.to(device) for x in xs))
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
    example = confidence_maps((2, 3, 40, 48), seed=4)
    built_layers = {
        name: build_all(name, inputs_for(name, example), device, builds, failures)
        for name in args.layers
    }
    result["parity"] = parity(built_layers, device)
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
