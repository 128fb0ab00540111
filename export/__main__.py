"""Command line of the export tool: ``peaklayers {demo,model,run} ...`` once installed,
``python -m export ...`` from the repository root (see --help).

Each subcommand's options are exactly the keyword arguments of its module's ``run``, so
``peaklayers demo --out d --layer topk`` is ``demo.run(out="d", layer="topk")``.
Expected problems (bad input, unreadable or corrupt files, an unavailable provider, an
unwritable folder) end with one line on stderr and exit status 1 (2 for bad arguments,
130 for Ctrl-C); anything else is a bug: its traceback is printed, then one line asking
for a report, and the exit status is 70.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import traceback

# Only light imports here: torch and the library load inside main(), where Ctrl-C and
# SIGTERM are handled.
from .common import ToolError, fail

# Subcommand -> the module whose run(**options) it calls.
COMMANDS = {"demo": ".demo", "model": ".model", "pipeline": ".pipeline", "run": ".run"}


class Terminated(Exception):
    """SIGTERM arrived: unwind like Ctrl-C, so staging folders are removed."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        sys.exit(fail(f"{self.prog}: {message} (see --help)", code=2))


def _layer_options(parser: argparse.ArgumentParser, default_stride: str) -> None:
    from .settings import LAYERS, REFINEMENTS

    group = parser.add_argument_group("peak layer")
    group.add_argument("--layer", choices=LAYERS, default="local",
                       help="global: one peak per map; local: every peak; topk: fixed-shape "
                            "K best per map (for serving) (default: local)")
    group.add_argument("--k", type=int, default=8, help="slots per map for --layer topk (8)")
    group.add_argument("--threshold", type=float, default=0.2,
                       help="peak threshold, in [0, 1] unless --force (0.2)")
    group.add_argument("--force", action="store_true", help="accept a threshold outside [0, 1]")
    group.add_argument("--refinement", choices=REFINEMENTS, default="integral",
                       help="sub-pixel refinement (integral)")
    group.add_argument("--patch-size", type=int, default=5, help="refinement patch side (5)")
    group.add_argument("--stride", type=float, default=None,
                       help="output stride of the maps; points are multiplied by it "
                            f"({default_stride})")
    group.add_argument("--class-maps", action="store_true",
                       help="the model also returns class maps: add the identity lookup "
                            "(class_probs output) for host-side grouping")


def _export_options(parser: argparse.ArgumentParser) -> None:
    from peaklayers.exporting import DYNAMO_OPSETS, TORCHSCRIPT_OPSETS, default_opset
    from peaklayers.serving import PROVIDERS

    parser.add_argument("--out", required=True, help="output folder (replaced when complete)")
    parser.add_argument("--provider", choices=PROVIDERS, default="auto",
                        help="ONNX Runtime provider used for verification (auto)")
    parser.add_argument("--opset", type=int, default=None,
                        help=f"ONNX opset, {TORCHSCRIPT_OPSETS[0]} to {TORCHSCRIPT_OPSETS[-1]} "
                             f"(default: {default_opset(False)}); .pt2 models use the dynamo "
                             f"exporter: {DYNAMO_OPSETS[0]} to {DYNAMO_OPSETS[-1]}")
    group = parser.add_argument_group("Triton Inference Server")
    group.add_argument("--triton", metavar="DIR", default=None,
                       help="also write a Triton model repository for the ONNX graph")
    group.add_argument("--max-batch-size", type=int, default=8, help="Triton max_batch_size (8)")
    group.add_argument("--triton-instances", type=int, default=1,
                       help="model instances per device in instance_group (1)")
    group.add_argument("--triton-kind", choices=("gpu", "cpu"), default="gpu",
                       help="instance_group kind (gpu)")


def _pipeline_parser(sub) -> None:
    from peaklayers.serving import PROVIDERS

    from .pipeline import KINDS, PIPELINE_FORMATS

    p = sub.add_parser("pipeline", help="a whole pipeline (frames in, frame-pixel points out) "
                                         "around your TorchScript, .pt2 or ONNX heads; export, "
                                         "verify")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("heads", nargs="+", metavar="HEAD",
                   help="one head (single-instance, centroid, multiclass-bottom-up) or "
                        "CENTROID_HEAD INSTANCE_HEAD; "
                        "TorchScript archives are code: give only archives you trust; ONNX "
                        "heads are joined with onnx.compose")
    p.add_argument("--out", required=True, help="output folder (replaced when complete)")
    p.add_argument("--format", choices=PIPELINE_FORMATS, default="peaklayers",
                   help="peaklayers: ONNX + TorchScript/.pt2; sleap-nn: the reference "
                        "library's model.onnx + export_metadata.json (default: peaklayers)")
    p.add_argument("--crop-size", default=None, metavar="H,W", help="top-down crop size")
    p.add_argument("--max-instances", type=int, default=None, help="instance slots")
    p.add_argument("--max-peaks", type=int, default=None,
                   help="multiclass-bottom-up: peak slots per body part")
    p.add_argument("--stride", type=float, default=1.0, help="head output stride (1)")
    p.add_argument("--class-stride", type=float, default=None,
                   help="multiclass-bottom-up: class maps' output stride (default: --stride)")
    p.add_argument("--centroid-stride", type=float, default=1.0,
                   help="top-down: centroid head output stride (1)")
    p.add_argument("--instance-stride", type=float, default=1.0,
                   help="top-down: instance head output stride (1)")
    p.add_argument("--input-scale", type=float, default=1.0, help="frame scale (1)")
    p.add_argument("--max-stride", type=int, default=1, help="pad frames to a multiple (1)")
    p.add_argument("--instance-input-scale", type=float, default=1.0, help="crop scale (1)")
    p.add_argument("--threshold", type=float, default=0.2, help="peak/centroid threshold")
    p.add_argument("--peak-threshold", type=float, default=0.2,
                   help="top-down: body-part threshold (0.2)")
    p.add_argument("--refinement", choices=("integral", "none"), default="integral")
    p.add_argument("--patch-size", type=int, default=5)
    p.add_argument("--node-names", default=None, metavar="a,b,...",
                   help="body-part names, one per part the heads find")
    p.add_argument("--class-names", default=None, metavar="a,b,...",
                   help="multi-class pipelines: identity names, one per class")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="example frames where a head does not fix them")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--uint8", dest="float_input", action="store_false",
                        help="the graph takes uint8 frames, divided by 255 in it (default)")
    frames.add_argument("--float-input", dest="float_input", action="store_true",
                        help="the graph takes float32 [0, 1] frames instead")
    p.set_defaults(float_input=False)
    p.add_argument("--instance-output", default=None,
                   help="tuple index or dict key of the maps in the (instance) head's output "
                        "(multiclass: default 0)")
    p.add_argument("--class-output", default=None,
                   help="multiclass: tuple index or dict key of the class vectors (top-down) "
                        "or class maps (bottom-up); default 1")
    p.add_argument("--provider", choices=PROVIDERS, default="auto",
                   help="ONNX Runtime provider used for verification (auto)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset")


def build_parser(prog: str = "python -m export") -> argparse.ArgumentParser:
    from peaklayers.serving import PROVIDERS

    from .png import MAX_PIXELS

    parser = _Parser(prog=prog,
                     description="Append peak layers to a confidence-map model; export to "
                                 "TorchScript/.pt2/ONNX, verify, serve.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="export, verify and draw the embedded demo model")
    _export_options(demo)
    _layer_options(demo, "2, the demo network's")

    model = sub.add_parser("model", help="append peak layers to your TorchScript, .pt2 or ONNX "
                                         "confidence-map model, export and verify")
    model.add_argument("path", help="a TorchScript archive, a torch.export .pt2 or an .onnx file. "
                                    "TorchScript archives are code (they can read and write "
                                    "files): give only archives you trust")
    model.add_argument("--input-name", default=None,
                       help="TorchScript/.pt2: input name of the exported graph (images); an "
                            "ONNX model keeps its own")
    model.add_argument("--input-shape", default=None, metavar="S,C,H,W",
                       help="example input shape; needed for TorchScript, otherwise read from "
                            "the model where it is fixed")
    model.add_argument("--output-name", default=None,
                       help="ONNX: the confidence-map output (default: the first output)")
    model.add_argument("--class-maps-output", default=None,
                       help="ONNX with --class-maps: the class-map output (default: the second)")
    _export_options(model)
    _layer_options(model, "1")

    _pipeline_parser(sub)

    run = sub.add_parser("run", help="run an exported ONNX model on .npy arrays or PNG images "
                                     "(pipeline graphs: also videos, in batches)")
    run.add_argument("model", help="an ONNX file written by this tool, or a sleap-nn format "
                                    "folder (DIR with model.onnx and export_metadata.json)")
    run.add_argument("inputs", nargs="+",
                     help=".npy arrays (S,C,H,W or C,H,W) or PNG images; for a pipeline graph "
                          "also video files (.mp4, .avi, .mkv, ...: pip install "
                          "'peaklayers[video]')")
    run.add_argument("--provider", choices=PROVIDERS, default="auto",
                     help="ONNX Runtime execution provider (auto: CUDA if it loads, else CPU)")
    run.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                     help="largest input accepted: pixels of a PNG or video frame (height × "
                          "width), checked before decoding; a .npy (a frame of one, for a "
                          f"pipeline graph) may hold 3N values ({MAX_PIXELS:,})")
    run.add_argument("--batch-size", type=int, default=8, metavar="B",
                     help="pipeline graphs: frames per run of the graph (8)")
    run.add_argument("--save", default=None, metavar="FILE",
                     help="write the peaks (a pipeline's instances) to FILE (.json or .csv) "
                          "instead of printing them")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m export") -> int:
    """Run the command line ``argv``; returns the exit status."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv, prog)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv, prog)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None, prog: str) -> int:
    try:
        args = build_parser(prog).parse_args(argv)
        # The dynamo exporter logs optional-dependency notices (e.g. torchvision) as warnings.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        options = {k: v for k, v in vars(args).items() if k != "command"}
        importlib.import_module(COMMANDS[args.command], __package__).run(**options)
    except ToolError as error:
        return fail(str(error))
    except OSError as error:  # the system refused: a full disk, a permission, a vanished file
        where = f": {error.filename}" if error.filename else ""
        return fail(f"{error.strerror or error}{where}")
    except KeyboardInterrupt:
        return fail("interrupted; nothing was left half-written", code=130)
    except Terminated:
        return fail("terminated; nothing was left half-written", code=143)
    except Exception:
        import peaklayers

        traceback.print_exc()
        return fail(f"this is a bug in peaklayers {peaklayers.__version__}, not a problem with "
                    "your input: please report it with the traceback above", code=70)
    return 0


def console() -> None:
    """Entry point of the installed ``peaklayers`` command."""
    sys.exit(main(prog="peaklayers"))


if __name__ == "__main__":
    sys.exit(main())
