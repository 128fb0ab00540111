"""Model inspection for :mod:`peaklayers.exporting`: modes, TorchScript, one recorded run.

- :func:`_eval_mode`: eval mode for the export, each module's mode restored afterwards;
  the modules of ``torch.export`` programs, whose mode is fixed, are left alone.
- :func:`_scripted_for_tracer`: the whole model scripted when a TorchScript module is
  inside it (the TorchScript-based exporter cannot trace into one), its peak layers
  scripted for a graph.
- :func:`_run_recorded`: one run of the model, recording the calls of its peak layers
  and class-map lookups, from which the exporter tells what each output is.
"""

import contextlib
import warnings
from collections.abc import Iterator
from typing import Optional

import torch
from torch import nn

from ..ops._layer import LocalPeakLayer, PeakLayer
from ..ops.class_maps import ClassMapLookup

# -- train/eval mode --------------------------------------------------------------------
#
# The module of a torch.export program (``ExportedProgram.module()``, e.g. a loaded .pt2
# head) refuses train() and eval(): its mode was fixed when it was exported, in its graph.
# Such modules are left alone; the modules around them are switched by setting their
# ``training`` flag (their own ``train`` would recurse into the program); every other
# part of the model goes through its own ``train``, as ``model.eval()`` would.


def _fixed_mode(module: nn.Module) -> bool:
    return isinstance(module, torch.fx.GraphModule) and "train" in vars(module)


def _holding_fixed(model: nn.Module) -> set[int]:
    """ids of the modules that are, or contain, a module with a fixed mode."""
    found: set[int] = set()

    def visit(module: nn.Module) -> bool:
        hit = _fixed_mode(module)
        for child in module.children():
            hit = visit(child) or hit
        if hit:
            found.add(id(module))
        return hit

    visit(model)
    return found


def _set_modes(module: nn.Module, modes: Optional[dict], holding: set[int]) -> None:
    """Eval mode (``modes`` None), or each module's mode from ``modes``."""
    if _fixed_mode(module):
        return
    if id(module) not in holding:
        if modes is None:
            module.train(False)
        else:
            for sub in module.modules():
                sub.train(modes[sub])
        return
    module.training = False if modes is None else modes[module]
    for child in module.children():
        _set_modes(child, modes, holding)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[bool]:
    """Eval mode for the export, each module's mode restored afterwards.

    Yields whether the model holds a module whose mode is fixed (a torch.export program).
    """
    modes = {m: m.training for m in model.modules()}
    holding = _holding_fixed(model)
    _set_modes(model, None, holding)
    try:
        yield bool(holding)
    finally:
        _set_modes(model, modes, holding)


# -- TorchScript submodules ---------------------------------------------------------------


def _scripted_part(model: nn.Module) -> Optional[str]:
    """Name of the outermost TorchScript submodule of ``model`` (not ``model`` itself)."""
    if isinstance(model, torch.jit.ScriptModule):
        return None
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            return name
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _scripted_for_tracer(model: nn.Module, dynamo: bool) -> nn.Module:
    """``model``, or ``torch.jit.script(model)`` when a TorchScript module is inside it.

    The TorchScript-based exporter traces Python modules and refuses to trace into a
    ScriptModule held by one ("not part of the active trace"); it does export a
    ScriptModule as a whole, so the whole model is scripted (the peak layers are
    scriptable). ``torch.export`` cannot read TorchScript at all.
    """
    name = _scripted_part(model)
    if name is None:
        return model
    if dynamo:
        raise ValueError(
            f"model holds a TorchScript module ({name!r}), which torch.export "
            "(dynamo=True) cannot trace: use dynamo=False, or give the head as a "
            "torch.export program"
        )
    try:
        with warnings.catch_warnings(), _layers_for_graph(model):
            # torch.jit.script is deprecated; the model's TorchScript leaves no choice.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
            return torch.jit.script(model)
    except (RuntimeError, torch.jit.frontend.FrontendError) as error:
        raise ValueError(
            f"model holds a TorchScript module ({name!r}): the TorchScript-based exporter "
            "cannot trace into it, so export_onnx scripts the whole model, and "
            f"torch.jit.script failed: {_first_line(error)}. Make the modules around it "
            "scriptable (nn.Sequential(head, layer) is)"
        ) from None


@contextlib.contextmanager
def _layers_for_graph(model: nn.Module) -> Iterator[None]:
    """The model's local and top-K layers scripted for a graph (``for_graph``, see
    :class:`~peaklayers.ops._layer.LocalPeakLayer`), each flag restored afterwards."""
    layers = [m for m in model.modules() if isinstance(m, LocalPeakLayer)]
    flags = [layer.for_graph for layer in layers]
    for layer in layers:
        layer.for_graph = True
    try:
        yield
    finally:
        for layer, flag in zip(layers, flags, strict=True):
            layer.for_graph = flag


# -- one recorded run -------------------------------------------------------------------


def _run_recorded(
    model: nn.Module, examples: tuple[torch.Tensor, ...]
) -> tuple[tuple, list, list]:
    """Run ``model`` once: its outputs as a tuple, the peak-layer calls ``(layer,
    output)`` and the class-map lookups ``(output, first axis)``, in call order."""
    peak_calls: list[tuple[PeakLayer, object]] = []
    lookups: list[tuple[object, str]] = []

    def on_peaks(module: nn.Module, args: object, output: object) -> None:
        peak_calls.append((module, output))

    def on_lookup(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        points = args[1] if len(args) > 1 else kwargs.get("points")
        if isinstance(points, torch.Tensor):
            # Variable-length points (N, 2) give one row per peak; top-K slots keep the batch.
            lookups.append((output, "peaks" if points.dim() == 2 else "batch"))

    hooks = []
    for m in model.modules():
        if isinstance(m, PeakLayer):
            hooks.append(m.register_forward_hook(on_peaks))
        elif isinstance(m, ClassMapLookup):
            hooks.append(m.register_forward_hook(on_lookup, with_kwargs=True))
    try:
        with torch.no_grad():
            output = model(*examples)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    return outputs, peak_calls, lookups
