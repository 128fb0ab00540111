"""Time the peak layers against the memory floor of one ``cms.clone()``.

Every time is a median from ``torch.utils.benchmark`` and every ratio is taken
against the clone of the same tensor measured in the same run, so the table stays
meaningful on a noisy machine. Run from the repository root::

    python benchmarks/bench_peaks.py            # all shapes
    python benchmarks/bench_peaks.py --quick    # the (8, 17, 192, 192) shape only
    python benchmarks/bench_peaks.py --nodes    # node counts of the exported graphs only

The ONNX Runtime columns run each layer exported with :func:`peaklayers.export_onnx`
(TorchScript-based exporter, opset 17, and the dynamo exporter at its newest opset)
ONCE at a smaller size, on the CPU execution provider, with the same maps as eager.
"""

import argparse
import atexit
import shutil
import statistics
import tempfile
import warnings
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks, export_onnx, functional

SHAPES = [(1, 17, 96, 96), (8, 17, 192, 192), (32, 17, 128, 128), (4, 1, 1024, 1024)]


def confidence_maps(shape, peaks=2, sigma=2.5, seed=0):
    """Realistic float32 maps: a few Gaussian blobs per channel, near zero elsewhere."""
    samples, channels, height, width = shape
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(samples, channels, peaks, 2, generator=gen) * torch.tensor(
        [width - 1, height - 1]
    )
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    cms = torch.zeros(shape)
    for p in range(peaks):
        cx = centres[:, :, p, 0, None, None]
        cy = centres[:, :, p, 1, None, None]
        blob = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
        cms = torch.maximum(cms, blob)
    return cms


LAYERS = {
    "GlobalPeaks": lambda: GlobalPeaks(refinement="integral"),
    "LocalPeaks": lambda: LocalPeaks(refinement="integral"),
    "TopKPeaks(k=8)": lambda: TopKPeaks(8, refinement="integral"),
}
FUNCTIONS = {
    "find_global_peaks": lambda cms: functional.find_global_peaks(cms, 0.2, "integral"),
    "find_local_peaks": lambda cms: functional.find_local_peaks(cms, 0.2, "integral"),
    "max_pool2d(3, 1, 1) alone": lambda cms: F.max_pool2d(cms, 3, 1, 1),
}


def eager(layer, cms):
    return layer


def torchscript(layer, cms):
    return torch.jit.script(layer)


_EXPORTS = Path(tempfile.mkdtemp(prefix="bench-peaks-"))
atexit.register(shutil.rmtree, _EXPORTS, True)


def onnxruntime_cpu(layer, cms, dynamo=False):
    """Export at a smaller size than ``cms`` (the graph is size-agnostic), run on CPU."""
    import onnxruntime as ort

    path = _EXPORTS / f"{type(layer).__name__}-{id(layer)}-{dynamo}.onnx"
    export_onnx(layer, cms[:2, :, :64, :48].contiguous(), path, dynamo=dynamo)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda maps: session.run(None, {name: maps.numpy()})


def warmed(build):
    """``build`` whose callable has already run three times on ``cms``.

    The first runs are not representative: TorchScript's profiling executor optimises
    the graph after them, and a new ONNX Runtime session grows its memory arena (on
    (32, 17, 128, 128) the first two runs took 500 to 700 ms, the next ones 75 ms).
    """

    def build_and_warm(layer, cms):
        fn = build(layer, cms)
        with torch.inference_mode():
            for _ in range(3):
                fn(cms)
        return fn

    return build_and_warm


# Each backend turns a layer (and an example input) into a callable on maps.
BACKENDS = {
    "eager": warmed(eager),
    "TorchScript": warmed(torchscript),
    "ORT CPU": warmed(onnxruntime_cpu),
    "ORT CPU (dynamo)": warmed(partial(onnxruntime_cpu, dynamo=True)),
}
# Backends also reported as a ratio to eager, measured in the same run.
AGAINST_EAGER = ["ORT CPU", "ORT CPU (dynamo)"]


def median_ms(fn, cms, min_run_time):
    timer = benchmark.Timer(stmt="fn(cms)", globals={"fn": fn, "cms": cms})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def run(shapes, min_run_time):
    headers = ["shape", "operation"]
    for name in BACKENDS:
        headers += [f"{name} ms", f"{name} / clone"]
    headers += [f"{name} / eager" for name in AGAINST_EAGER]
    rows = []
    for shape in shapes:
        cms = confidence_maps(shape)
        with torch.inference_mode():
            floor = median_ms(lambda x: x.clone(), cms, min_run_time)
            floor_cells = [f"{floor:.3f}", "1.0"] * len(BACKENDS) + [""] * len(AGAINST_EAGER)
            rows.append([str(shape), "cms.clone() (floor)", *floor_cells])
            for label, make in LAYERS.items():
                row = [str(shape), label]
                times = {}
                for name, build in BACKENDS.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fn = build(make(), cms)
                    ms = times[name] = median_ms(fn, cms, min_run_time)
                    row += [f"{ms:.3f}", f"{ms / floor:.1f}"]
                row += [f"{times[name] / times['eager']:.2f}" for name in AGAINST_EAGER]
                rows.append(row)
            for label, fn in FUNCTIONS.items():
                ms = median_ms(fn, cms, min_run_time)
                rows.append([str(shape), label, f"{ms:.3f}", f"{ms / floor:.1f}"]
                            + [""] * (2 * len(BACKENDS) - 2 + len(AGAINST_EAGER)))
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def flat_top_table(min_run_time, shape=(8, 17, 192, 192), rounds=5):
    """Cost of ``flat_tops="merge"`` against ``"drop"``, same maps, same run.

    The two are timed alternately ``rounds`` times; the ratio is the median of the
    per-round ratios, so a slow spell of the machine hits both sides. Eager for both
    layers; ``TopKPeaks`` also scripted, and exported (TorchScript-based exporter) to
    ONNX Runtime on the CPU.
    """
    lines = [
        "| layer | backend | dtype | drop ms | merge ms | merge / drop (median of rounds) |",
        "|---|---|---|---|---|---|",
    ]
    cases = [
        ("LocalPeaks", LocalPeaks, "eager", BACKENDS["eager"]),
        ("TopKPeaks(k=8)", partial(TopKPeaks, 8), "eager", BACKENDS["eager"]),
        ("TopKPeaks(k=8)", partial(TopKPeaks, 8), "TorchScript", BACKENDS["TorchScript"]),
        ("TopKPeaks(k=8)", partial(TopKPeaks, 8), "ORT CPU", BACKENDS["ORT CPU"]),
    ]
    for dtype in (torch.float32, torch.float16):
        cms = confidence_maps(shape).to(dtype)
        for name, make, backend, build in cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drop = build(make(flat_tops="drop"), cms)
                merge = build(make(flat_tops="merge"), cms)
            drops, merges = [], []
            with torch.inference_mode():
                for _ in range(rounds):
                    drops.append(median_ms(drop, cms, min_run_time / rounds))
                    merges.append(median_ms(merge, cms, min_run_time / rounds))
            ratio = statistics.median(m / d for m, d in zip(merges, drops, strict=True))
            cells = [name, backend, str(dtype).replace("torch.", ""),
                     f"{statistics.median(drops):.3f}", f"{statistics.median(merges):.3f}"]
            lines.append("| " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


NODE_LAYERS = {
    **LAYERS,
    "TopKPeaks(k=8, merge)": lambda: TopKPeaks(8, refinement="integral", flat_tops="merge"),
}


def node_table():
    """Nodes of every exported graph: as written by each exporter, and as ONNX Runtime
    runs it on the CPU after its own graph optimisation (ORT_ENABLE_ALL)."""
    import onnx
    import onnxruntime as ort

    lines = ["| layer | exporter | nodes in the file | nodes after ORT optimisation |",
             "|---|---|---|---|"]
    cms = confidence_maps((2, 17, 64, 48))
    for label, make in NODE_LAYERS.items():
        for exporter, dynamo in (("TorchScript-based", False), ("dynamo", True)):
            path = _EXPORTS / f"nodes-{label}-{dynamo}.onnx"
            optimised = path.with_suffix(".ort.onnx")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(make(), cms, path, dynamo=dynamo)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.optimized_model_filepath = str(optimised)
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            counts = [len(onnx.load(str(f)).graph.node) for f in (path, optimised)]
            lines.append(f"| {label} | {exporter} | {counts[0]} | {counts[1]} |")
    return "\n".join(lines)


def dtype_table(min_run_time, shape=(8, 17, 192, 192), rounds=5):
    """``TopKPeaks(k=8)`` in ONNX Runtime CPU, float16 against float32 maps, timed
    alternately ``rounds`` times (the ratio is the median of per-round ratios)."""
    lines = ["| exporter | float32 ms | float16 ms | float16 / float32 (median of rounds) |",
             "|---|---|---|---|"]
    maps = {dtype: confidence_maps(shape).to(dtype) for dtype in (torch.float32, torch.float16)}
    for name in AGAINST_EAGER:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fns = {dtype: BACKENDS[name](TopKPeaks(8), cms) for dtype, cms in maps.items()}
        times = {dtype: [] for dtype in maps}
        with torch.inference_mode():
            for _ in range(rounds):
                for dtype, fn in fns.items():
                    times[dtype].append(median_ms(fn, maps[dtype], min_run_time / rounds))
        single, half = times[torch.float32], times[torch.float16]
        ratio = statistics.median(h / f for h, f in zip(half, single, strict=True))
        lines.append(f"| {name} | {statistics.median(single):.3f} "
                     f"| {statistics.median(half):.3f} | {ratio:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only (8, 17, 192, 192)")
    parser.add_argument("--nodes", action="store_true", help="only the node-count table")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timing")
    args = parser.parse_args()
    if args.nodes:
        print(node_table())
        return
    shapes = [SHAPES[1]] if args.quick else SHAPES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 maps")
    print(run(shapes, args.min_run_time))
    print(f"\nflat tops on {SHAPES[1]}, integral refinement")
    print(flat_top_table(args.min_run_time))
    print(f"\nfloat16 against float32 on {SHAPES[1]}, TopKPeaks(k=8), ONNX Runtime CPU")
    print(dtype_table(args.min_run_time))
    print("\nnodes of the exported graphs")
    print(node_table())


if __name__ == "__main__":
    main()
