"""Run exported peak graphs with ONNX Runtime on an execution provider you choose.

:func:`open_session` opens an ``onnxruntime.InferenceSession`` on ``"cuda"``, ``"cpu"`` or
``"auto"`` and checks, with ``session.get_providers()``, which provider actually loaded:
ONNX Runtime silently falls back to the CPU when the CUDA/cuDNN libraries do not load, so

- ``"cuda"`` raises :class:`ProviderUnavailableError` instead of running on the CPU;
- ``"auto"`` uses CUDA if it loads, else the CPU; the session says which
  (:attr:`PeakSession.provider`, :attr:`PeakSession.fallback_reason`), the first fallback
  in a process emits a :class:`ProviderFallbackWarning` and every fallback is logged at
  INFO level on the ``peaklayers.runtime`` logger;
- ``"cpu"`` uses the CPU only.

ONNX Runtime prints its reason for a failed CUDA load (e.g. a missing ``libcublasLt``)
straight to the process's stderr from C++. While a CUDA session is created, that output
is captured and moved into the error or warning message, so the reason is kept but is
not printed as coloured log lines; if CUDA does load, anything captured is written back
to stderr unchanged.

:class:`PeakSession` runs the graph two ways:

- :meth:`PeakSession.run`: numpy arrays in, numpy arrays out;
- :meth:`PeakSession.run_torch`: torch tensors in, torch tensors out, through IO binding:
  the input tensor's memory is bound directly and the outputs are allocated by ONNX
  Runtime on the same device and handed to torch with DLPack, without host copies.

Both check the rank and dtype of every input against the model's declared inputs first
and raise ``ValueError``/``TypeError`` naming the input, instead of an ONNX Runtime error.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx
import onnxruntime as ort
import torch

from . import PROVIDERS
from ._native_stderr import _native_stderr_captured

__all__ = [
    "ELEMENT_TYPES",
    "PROVIDERS",
    "ElementType",
    "PeakSession",
    "RUNTIME_ERRORS",
    "ProviderFallbackWarning",
    "ProviderUnavailableError",
    "open_session",
]

# The public module's name (peaklayers.runtime), which users configure.
logger = logging.getLogger("peaklayers.runtime")

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"

# ONNX Runtime's own severity scale: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_QUIET_SESSION_SEVERITY = 3


class ProviderUnavailableError(RuntimeError):
    """The requested execution provider did not load (ONNX Runtime fell back to another)."""


def _runtime_errors() -> tuple[type[Exception], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = (getattr(state, name) for name in dir(state))
    return tuple(e for e in found if isinstance(e, type) and issubclass(e, Exception))


RUNTIME_ERRORS = _runtime_errors()
"""The exceptions ONNX Runtime raises for a model it cannot load or an input it refuses
(they derive from ``Exception`` directly)."""


class ProviderFallbackWarning(RuntimeWarning):
    """``provider="auto"`` could not load CUDA and runs on the CPU."""


# --------------------------------------------------------------------------- dtypes


@dataclass(frozen=True)
class ElementType:
    """One tensor element type under its four names.

    Attributes:
        name (str): the numpy-style name, e.g. ``"float32"`` (also used in messages).
        onnx (int): the ``onnx.TensorProto`` data type, e.g. ``TensorProto.FLOAT``.
        ort (str): ONNX Runtime's type string, e.g. ``"tensor(float)"``.
        numpy (numpy.dtype or None): None where numpy has no such type (bfloat16).
        torch (torch.dtype): the torch dtype.
    """

    name: str
    onnx: int
    ort: str
    numpy: Optional[np.dtype]
    torch: torch.dtype


_P = onnx.TensorProto
ELEMENT_TYPES = (
    ElementType("float32", _P.FLOAT, "tensor(float)", np.dtype(np.float32), torch.float32),
    ElementType("float16", _P.FLOAT16, "tensor(float16)", np.dtype(np.float16), torch.float16),
    ElementType("float64", _P.DOUBLE, "tensor(double)", np.dtype(np.float64), torch.float64),
    ElementType("bfloat16", _P.BFLOAT16, "tensor(bfloat16)", None, torch.bfloat16),
    ElementType("int32", _P.INT32, "tensor(int32)", np.dtype(np.int32), torch.int32),
    ElementType("int64", _P.INT64, "tensor(int64)", np.dtype(np.int64), torch.int64),
    ElementType("bool", _P.BOOL, "tensor(bool)", np.dtype(np.bool_), torch.bool),
    # Frames into a pipeline graph (SPEC §5.1).
    ElementType("uint8", _P.UINT8, "tensor(uint8)", np.dtype(np.uint8), torch.uint8),
)
_BY_ORT = {e.ort: e for e in ELEMENT_TYPES}
_BY_NAME = {e.name: e for e in ELEMENT_TYPES}
_BY_TORCH = {e.torch: e for e in ELEMENT_TYPES}


def _dtype_name(ort_type: str) -> str:
    """``"tensor(float)"`` -> ``"float32"``; types outside the table keep ORT's string."""
    element = _BY_ORT.get(ort_type)
    return element.name if element is not None else ort_type


# --------------------------------------------------------------------------- sessions


class PeakSession:
    """An ONNX Runtime session with the provider it really runs on and checked inputs.

    Made by :func:`open_session`. Attributes:

    - ``session``: the underlying ``onnxruntime.InferenceSession``.
    - ``provider`` (str): the execution provider actually running, first of ``providers``
      (e.g. ``"CPUExecutionProvider"``).
    - ``providers`` (list[str]): ``session.get_providers()``.
    - ``device_id`` (int): the CUDA device of a CUDA session (0 otherwise).
    - ``fallback_reason`` (str or None): why ``provider="auto"`` runs on the CPU.
    - ``input_name`` (str): the first input (the confidence maps of a peak graph).
    - ``input_names``, ``output_names`` (list[str]): in model order.
    - ``inputs``, ``outputs`` (dict[str, (str, tuple)]): name -> (dtype name, shape).
      The dtype name is numpy's (``"float32"``, ``"int32"``, ``"bool"``, ``"bfloat16"``...),
      so ``np.dtype(name)`` works for every numpy type; the shape holds an int for a fixed
      dimension and a str (symbolic name) or None for a dynamic one.
    """

    def __init__(
        self, session: Any, *, device_id: int = 0, fallback_reason: Optional[str] = None
    ) -> None:
        self.session = session
        self.providers = list(session.get_providers())
        self.provider = self.providers[0]
        self.device_id = device_id
        self.fallback_reason = fallback_reason
        self.inputs = {
            arg.name: (_dtype_name(arg.type), tuple(arg.shape)) for arg in session.get_inputs()
        }
        self.outputs = {
            arg.name: (_dtype_name(arg.type), tuple(arg.shape)) for arg in session.get_outputs()
        }
        self.input_names = list(self.inputs)
        self.output_names = list(self.outputs)
        self.input_name = self.input_names[0] if self.input_names else None

    def __repr__(self) -> str:
        return (
            f"PeakSession(provider={self.provider!r}, inputs={self.inputs}, "
            f"outputs={self.output_names})"
        )

    # ---- numpy

    def run(self, confmaps: Any = None, /, **inputs: Any) -> dict[str, np.ndarray]:
        """Run the graph on host arrays.

        Args:
            confmaps (ndarray or Tensor): the first input (``input_name``), positionally.
            **inputs: inputs by name (also the first one, if not given positionally).
                numpy arrays, or CPU torch tensors (read through ``.numpy()``, no copy).

        Returns:
            dict[str, ndarray]: the outputs, keyed by output name, in model order.

        Raises:
            TypeError: a missing or unknown input, or an input of the wrong dtype.
            ValueError: an input of the wrong rank or size in a fixed dimension, or a
                CUDA tensor (use :meth:`run_torch` to keep it on the device).
        """
        feeds = self._gather(confmaps, inputs)
        arrays = {name: self._as_array(name, value) for name, value in feeds.items()}
        values = self.session.run(self.output_names, arrays)
        return dict(zip(self.output_names, values, strict=True))

    def _as_array(self, name: str, value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise ValueError(
                    f"input {name!r} is a {value.device.type} tensor; run() takes host arrays: "
                    "use run_torch() to keep it on the device, or pass tensor.cpu()"
                )
            self._check(name, value, "array")
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16
                raise TypeError(
                    f"input {name!r} is a bfloat16 tensor, which numpy cannot hold: "
                    "use run_torch()"
                )
            return value.detach().numpy()
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"input {name!r} must be a numpy array or a torch tensor, "
                f"got {type(value).__name__}"
            )
        self._check(name, value, "array")
        return value

    # ---- torch, IO binding

    def run_torch(self, confmaps: Any = None, /, **inputs: Any) -> dict[str, torch.Tensor]:
        """Run the graph on torch tensors through IO binding, without host copies.

        Each input tensor's memory is bound directly (made contiguous first); ONNX Runtime
        allocates the outputs on the device of the first input (it decides their shapes
        at run time, so data-dependent shapes work), and they are returned as torch
        tensors that share that memory through DLPack.

        A CUDA input needs a CUDA session (``provider`` ``"cuda"``, or ``"auto"`` where
        CUDA loaded) on the same device. Before the run, torch's current CUDA stream is
        synchronised so the input is complete; ONNX Runtime synchronises its own stream
        at the end of the run, so the outputs are complete when they are returned.
        (The CUDA path has not been run on a GPU; the CPU path is tested.)

        Args and errors as :meth:`run`; numpy arrays are accepted and wrapped with
        ``torch.from_numpy``.

        Returns:
            dict[str, Tensor]: the outputs, keyed by output name, in model order.
        """
        feeds = self._gather(confmaps, inputs)
        # The dict holds the (contiguous) tensors until the run has finished.
        tensors = {name: self._as_tensor(name, value) for name, value in feeds.items()}
        device = tensors[self.input_names[0]].device if tensors else torch.device("cpu")
        for name, tensor in tensors.items():
            self._check_device(name, tensor.device)
        if any(tensor.is_cuda for tensor in tensors.values()):
            # ONNX Runtime computes on its own stream: let torch's queued work finish first.
            torch.cuda.current_stream(torch.device("cuda", self.device_id)).synchronize()

        binding = self.session.io_binding()
        for name, tensor in tensors.items():
            binding.bind_input(
                name,
                tensor.device.type,
                _device_index(tensor.device),
                _BY_TORCH[tensor.dtype].onnx,
                tuple(tensor.shape),
                tensor.data_ptr(),
            )
        for name in self.output_names:
            binding.bind_output(name, device.type, _device_index(device))
        self.session.run_with_iobinding(binding)
        outputs = {
            name: _ortvalue_to_torch(value)
            for name, value in zip(self.output_names, binding.get_outputs(), strict=True)
        }
        del tensors  # the inputs may go now
        return outputs

    def _as_tensor(self, name: str, value: Any) -> torch.Tensor:
        if isinstance(value, np.ndarray):
            self._check(name, value, "tensor")
            value = torch.from_numpy(value)
        elif isinstance(value, torch.Tensor):
            self._check(name, value, "tensor")
        else:
            raise TypeError(
                f"input {name!r} must be a torch tensor or a numpy array, "
                f"got {type(value).__name__}"
            )
        return value.detach().contiguous()

    def _check_device(self, name: str, device: torch.device) -> None:
        if device.type == "cpu":
            return  # a CUDA session copies host inputs itself
        if device.type != "cuda":
            raise ValueError(f"input {name!r} is on {device}; run_torch() takes CPU or CUDA")
        if self.provider != CUDA_EP:
            raise ValueError(
                f"input {name!r} is on {device} but this session runs on {self.provider}: "
                "open the session with provider='cuda', or pass a CPU tensor"
            )
        if _device_index(device) != self.device_id:
            raise ValueError(
                f"input {name!r} is on {device} but this session runs on cuda:{self.device_id}"
            )

    # ---- shared checks

    def _gather(self, confmaps: Any, inputs: dict[str, Any]) -> dict[str, Any]:
        """Name every input, in model order; refuse missing, unknown and doubled names."""
        feeds = dict(inputs)
        if confmaps is not None:
            if self.input_name is None:
                raise TypeError("this model takes no inputs, got one positionally")
            if self.input_name in feeds:
                raise TypeError(f"input {self.input_name!r} given both positionally and by name")
            feeds[self.input_name] = confmaps
        known = ", ".join(repr(n) for n in self.input_names) or "none"
        unknown = [n for n in feeds if n not in self.inputs]
        if unknown:
            names = ", ".join(repr(n) for n in unknown)
            raise TypeError(f"unknown input {names}; the model's inputs are {known}")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            names = ", ".join(repr(n) for n in missing)
            raise TypeError(f"missing input {names}; the model's inputs are {known}")
        return {n: feeds[n] for n in self.input_names}

    def _check(self, name: str, value: Any, kind: str) -> None:
        """Compare an array's or tensor's rank, dtype and fixed sizes with the model's."""
        if isinstance(value, torch.Tensor):
            rank, dtype, shape = value.dim(), _torch_dtype_name(value.dtype), tuple(value.shape)
        else:
            rank, dtype, shape = value.ndim, value.dtype.name, value.shape
        expected_dtype, expected_shape = self.inputs[name]
        dims = "(" + ", ".join("?" if d is None else str(d) for d in expected_shape) + ")"
        if expected_dtype not in _BY_NAME:
            raise TypeError(
                f"input {name!r} has ONNX type {expected_dtype}, which peaklayers.runtime "
                f"does not support (supported: {', '.join(_BY_NAME)})"
            )
        rank_d = f"{len(expected_shape)}-D"
        expected = f"input {name!r} must be a {rank_d} {expected_dtype} {kind} {dims}"
        if rank != len(expected_shape):
            raise ValueError(f"{expected}, got {rank}-D {dtype}")
        if dtype != expected_dtype:
            raise TypeError(f"{expected}, got {rank}-D {dtype}")
        for axis, (want, got) in enumerate(zip(expected_shape, shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise ValueError(
                    f"{expected}: dimension {axis} must be {want}, got shape {tuple(shape)}"
                )
        # Images and maps need pixels: graphs divide by their height and width, and ONNX
        # Runtime answers an empty one with an integer division by zero.
        if rank == 4 and 0 in shape[2:]:
            raise ValueError(f"{expected}: height and width must not be 0, got shape "
                             f"{tuple(shape)}")


def _torch_dtype_name(dtype: torch.dtype) -> str:
    element = _BY_TORCH.get(dtype)
    return element.name if element is not None else str(dtype).removeprefix("torch.")


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else 0


def _ortvalue_to_torch(value: Any) -> torch.Tensor:
    """An output OrtValue as a torch tensor on the same device, sharing its memory.

    The DLPack capsule holds a reference to the ORT tensor, so the memory stays valid
    as long as the torch tensor lives. DLPack carries bool as uint8; view it back.
    """
    tensor = torch.from_dlpack(value)
    if value.data_type() == "tensor(bool)" and tensor.dtype == torch.uint8:
        tensor = tensor.view(torch.bool)
    return tensor


# --------------------------------------------------------------------------- opening

_fallback_warned = False


def _create_session(source: Union[str, bytes], options: Any, providers: list) -> Any:
    """``onnxruntime.InferenceSession``; a seam for tests that fake a CUDA machine."""
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def _model_source(model: Any) -> Union[str, bytes]:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model: no ONNX file at {str(path)!r}")
        return str(path)
    raise TypeError(
        "model must be a path (str or Path), ONNX bytes or an onnx.ModelProto, "
        f"got {type(model).__name__}"
    )


def _unavailable_message(requested: str, loaded: Optional[list], reason: str) -> str:
    if loaded is None:
        got = "this onnxruntime package has no CUDAExecutionProvider (install onnxruntime-gpu)"
    else:
        got = f"the session's providers are {loaded}"
    lines = [
        f"CUDAExecutionProvider was requested (provider={requested!r}) but did not load; "
        f"{got}.",
        "Check that the CUDA and cuDNN libraries match your onnxruntime-gpu version "
        f"(installed: onnxruntime {ort.__version__}, see https://onnxruntime.ai/docs/"
        "execution-providers/CUDA-ExecutionProvider.html#requirements) and can be found "
        "(LD_LIBRARY_PATH / PATH), and that a GPU is visible.",
    ]
    if reason:
        lines.append("ONNX Runtime said:\n  " + reason.replace("\n", "\n  "))
    return "\n".join(lines)


def open_session(
    model: Any,
    provider: str = "auto",
    *,
    session_options: Optional[ort.SessionOptions] = None,
    device_id: int = 0,
) -> PeakSession:
    """Open an ONNX Runtime session on an explicit execution provider and verify it.

    Args:
        model (str, Path, bytes or onnx.ModelProto): the ONNX model.
        provider (str): ``"cuda"``: CUDA or an error (the CPU provider is registered too,
            as ONNX Runtime requires, for nodes CUDA has no kernel for);
            ``"cpu"``: CPU only; ``"auto"``: CUDA if it loads, else CPU with a
            :class:`ProviderFallbackWarning` (once per process) and an INFO log line.
        session_options (onnxruntime.SessionOptions or None): used as given. By default
            a fresh one with the session log severity at "error", so per-session
            warnings (e.g. nodes assigned to the CPU in a CUDA session) are not printed.
        device_id (int): the CUDA device.

    Returns:
        PeakSession: ``provider`` is the provider that actually loaded.

    Raises:
        ValueError: ``provider`` is not one of ``"auto"``, ``"cuda"``, ``"cpu"``.
        ProviderUnavailableError: ``provider="cuda"`` and CUDA did not load. The message
            says what was requested, what loaded, and ONNX Runtime's own reason.
    """
    if provider not in PROVIDERS:
        raise ValueError(
            f"provider must be one of {', '.join(repr(p) for p in PROVIDERS)}, got {provider!r}"
        )
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise ValueError(f"device_id must be a non-negative int, got {device_id!r}")
    source = _model_source(model)
    if session_options is None:
        session_options = ort.SessionOptions()
        session_options.log_severity_level = _QUIET_SESSION_SEVERITY

    if provider == "cpu":
        return PeakSession(_create_session(source, session_options, [CPU_EP]))

    session = None
    if CUDA_EP in ort.get_available_providers():
        cuda = (CUDA_EP, {"device_id": device_id})
        with _native_stderr_captured() as captured:
            session = _create_session(source, session_options, [cuda, CPU_EP])
        reason = captured.text
        loaded = list(session.get_providers())
        if CUDA_EP in loaded:
            if captured.raw:  # not about a failed load: give it back unchanged
                os.write(2, captured.raw)
            return PeakSession(session, device_id=device_id)
    else:
        reason, loaded = "", None

    message = _unavailable_message(provider, loaded, reason)
    if provider == "cuda":
        raise ProviderUnavailableError(message)

    global _fallback_warned
    logger.info("provider='auto' runs on CPUExecutionProvider: %s", message)
    if not _fallback_warned:
        _fallback_warned = True
        warnings.warn(
            "provider='auto' runs on CPUExecutionProvider (this warning is shown once per "
            "process).\n" + message,
            ProviderFallbackWarning,
            stacklevel=2,
        )
    if session is None:
        session = _create_session(source, session_options, [CPU_EP])
    return PeakSession(session, fallback_reason=message)
