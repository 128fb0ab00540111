"""peaklayers.runtime: provider selection and verification, numpy and IO-binding runs.

This machine has no GPU and no CUDA libraries (onnxruntime-gpu lists the CUDA provider
but cannot load it). The real-machine tests below check that "cuda" raises and "auto"
falls back here; the CUDA success path is checked with a fake session whose
get_providers() reports CUDA. The CUDA branch of run_torch is not run here.
"""

import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import cases
from peaklayers import GlobalPeaks, LocalPeaks, TopKPeaks
from peaklayers.runtime import (
    ELEMENT_TYPES,
    ProviderFallbackWarning,
    ProviderUnavailableError,
    open_session,
)
from peaklayers.serving import runtime
from peaklayers.serving._native_stderr import _native_stderr_captured

PX = 1e-5  # tolerance of refined points, in map pixels
EXPORT_SHAPE = (2, 3, 24, 20)
RUN_CASES = {  # other batch and map sizes than the export size
    "1x17x29": cases.gaussians(1, 3, 17, 29, seed=1),
    "3x32x16": cases.gaussians(3, 3, 32, 16, seed=2),
    "noisy-2x9x11": cases.noisy(2, 3, 9, 11, seed=3),
}
LAYERS = {
    "local": (LocalPeaks(), ["points", "vals", "sample_inds", "channel_inds"]),
    "global": (GlobalPeaks(), ["points", "vals"]),
    "topk": (TopKPeaks(4), ["points", "vals", "valid"]),
}
# CUDA is expected to load only where torch itself sees a GPU; here it does not.
GPU_MACHINE = torch.cuda.is_available()


def export(layer, path, output_names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation/tracer notes
        torch.onnx.export(
            layer,
            (cases.gaussians(*EXPORT_SHAPE),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["confmaps"],
            output_names=output_names,
            dynamic_axes={"confmaps": {0: "batch", 2: "height", 3: "width"}},
        )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    return {
        name: export(layer, folder / f"{name}.onnx", outputs)
        for name, (layer, outputs) in LAYERS.items()
    }


@pytest.fixture(scope="module")
def local_session(models):
    return open_session(models["local"], "cpu")


def two_input_model():
    """``out = confmaps * scale`` with a (batch, 3, height, width) and a (1,) input."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["confmaps", "scale"], ["out"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("confmaps", TensorProto.FLOAT, ["batch", 3, "h", "w"]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def identity_model(onnx_type):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", onnx_type, ["n", 2])],
        [helper.make_tensor_value_info("y", onnx_type, ["n", 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def assert_same(actual, expected, name):
    """Exact for everything but points, which agree to PX map pixels (NaN where NaN)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    if name == "points":
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=PX, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


# --------------------------------------------------------------------------- runs


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_matches_eager_at_other_sizes(models, layer, case):
    cms = RUN_CASES[case]
    module, output_names = LAYERS[layer]
    eager = dict(zip(output_names, module(cms), strict=True))
    session = open_session(models[layer], "cpu")
    assert session.output_names == output_names

    outputs = session.run(cms.numpy())
    assert list(outputs) == output_names
    for name in output_names:
        assert isinstance(outputs[name], np.ndarray)
        assert_same(outputs[name], eager[name].numpy(), name)
    if layer == "local":
        assert len(outputs["vals"]) > 0  # the comparison covered real peaks

    bound = session.run_torch(cms)
    assert list(bound) == output_names
    for name in output_names:
        assert isinstance(bound[name], torch.Tensor) and bound[name].device.type == "cpu"
        assert_same(bound[name].numpy(), outputs[name], name)  # run_torch == run, exactly


def test_run_accepts_cpu_tensors_and_names(local_session):
    cms = RUN_CASES["1x17x29"]
    by_array = local_session.run(cms.numpy())
    for outputs in (local_session.run(cms), local_session.run(confmaps=cms.numpy())):
        for name, value in by_array.items():
            np.testing.assert_array_equal(outputs[name], value)


def test_run_torch_makes_inputs_contiguous(local_session):
    cms = RUN_CASES["3x32x16"]
    strided = cms.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert not strided.is_contiguous()
    expected = local_session.run(cms.numpy())
    outputs = local_session.run_torch(strided)
    for name, value in expected.items():
        np.testing.assert_array_equal(outputs[name].numpy(), value)


def test_run_torch_outputs_outlive_session_and_binding(models):
    session = open_session(models["local"], "cpu")
    cms = RUN_CASES["1x17x29"]
    outputs = session.run_torch(cms)
    expected = {name: value.clone() for name, value in outputs.items()}
    del session
    import gc

    gc.collect()
    noise = [torch.rand(4096) for _ in range(64)]  # reuse freed memory, if any was freed
    assert len(noise) == 64
    for name, value in expected.items():
        assert torch.equal(outputs[name].nan_to_num(), value.nan_to_num())


def test_run_torch_bool_outputs_are_bool(models):
    session = open_session(models["topk"], "cpu")
    assert session.outputs["valid"][0] == "bool"
    valid = session.run_torch(RUN_CASES["3x32x16"])["valid"]
    assert valid.dtype == torch.bool
    assert torch.equal(valid, TopKPeaks(4)(RUN_CASES["3x32x16"])[2])


def test_two_inputs_by_name():
    session = open_session(two_input_model(), "cpu")
    assert session.input_names == ["confmaps", "scale"] and session.input_name == "confmaps"
    cms = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    scale = np.array([0.5], dtype=np.float32)
    np.testing.assert_array_equal(session.run(cms, scale=scale)["out"], cms * 0.5)
    np.testing.assert_array_equal(session.run(scale=scale, confmaps=cms)["out"], cms * 0.5)
    bound = session.run_torch(torch.from_numpy(cms), scale=torch.from_numpy(scale))
    np.testing.assert_array_equal(bound["out"].numpy(), cms * 0.5)


@pytest.mark.parametrize("element", ELEMENT_TYPES, ids=lambda e: e.name)
def test_dtype_table_round_trips(element):
    session = open_session(identity_model(element.onnx), "cpu")
    assert session.inputs["x"] == (element.name, ("n", 2))
    assert session.outputs["y"] == (element.name, ("n", 2))
    values = torch.tensor([[1, 0], [0, 1], [1, 1]]).to(element.torch)
    bound = session.run_torch(values)["y"]
    assert bound.dtype == element.torch and torch.equal(bound, values)
    if element.numpy is not None:
        assert np.dtype(element.name) == element.numpy
        out = session.run(values.numpy())["y"]
        assert out.dtype == element.numpy
        np.testing.assert_array_equal(out, values.numpy())
    else:  # bfloat16: numpy cannot hold it
        with pytest.raises(TypeError, match="'x' is a bfloat16 tensor.*run_torch"):
            session.run(values)


def test_model_as_bytes_and_proto(models, local_session):
    proto = onnx.load(str(models["local"]))
    for model in (proto, proto.SerializeToString()):
        session = open_session(model, "cpu")
        assert session.inputs == local_session.inputs
        assert session.output_names == local_session.output_names


def test_attributes(local_session):
    assert local_session.provider == "CPUExecutionProvider"
    assert local_session.providers == ["CPUExecutionProvider"]
    assert local_session.input_name == "confmaps" and local_session.input_names == ["confmaps"]
    assert local_session.inputs == {"confmaps": ("float32", ("batch", 3, "height", "width"))}
    assert isinstance(local_session.session, ort.InferenceSession)
    assert local_session.fallback_reason is None


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", ["run", "run_torch"])
def test_wrong_rank(local_session, method):
    cms = RUN_CASES["1x17x29"][0]  # (3, 17, 29)
    kind = "array" if method == "run" else "tensor"
    message = (
        f"input 'confmaps' must be a 4-D float32 {kind} (batch, 3, height, width), "
        "got 3-D float32"
    )
    for value in (cms, cms.numpy()):
        with pytest.raises(ValueError) as info:
            getattr(local_session, method)(value)
        assert str(info.value) == message


@pytest.mark.parametrize("method", ["run", "run_torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int32, torch.bool])
def test_wrong_dtype(local_session, method, dtype):
    cms = RUN_CASES["1x17x29"].to(dtype)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(TypeError, match=rf"'confmaps' must be a 4-D float32 .*got 4-D {name}$"):
        getattr(local_session, method)(cms.numpy())
    with pytest.raises(TypeError, match=rf"got 4-D {name}$"):
        getattr(local_session, method)(cms)


def test_wrong_fixed_size(local_session):
    with pytest.raises(ValueError, match=r"dimension 1 must be 3, got shape \(1, 4, 8, 8\)"):
        local_session.run(np.zeros((1, 4, 8, 8), np.float32))


@pytest.mark.parametrize("method", ["run", "run_torch"])
def test_missing_unknown_and_doubled_inputs(method):
    session = open_session(two_input_model(), "cpu")
    run = getattr(session, method)
    cms = np.zeros((1, 3, 4, 4), np.float32)
    scale = np.ones(1, np.float32)
    with pytest.raises(TypeError, match=r"missing input 'scale'; the model's inputs are "):
        run(cms)
    with pytest.raises(TypeError, match="missing input 'confmaps', 'scale'"):
        run()
    with pytest.raises(TypeError, match=r"unknown input 'sclae'; .* 'confmaps', 'scale'$"):
        run(cms, sclae=scale)
    with pytest.raises(TypeError, match="'confmaps' given both positionally and by name"):
        run(cms, confmaps=cms, scale=scale)
    with pytest.raises(ValueError, match=r"'scale' must be a 1-D float32 .* \(1\), got 0-D"):
        run(cms, scale=np.ones((), np.float32))


def test_not_an_array(local_session):
    with pytest.raises(TypeError, match="'confmaps' must be a numpy array or a torch tensor"):
        local_session.run([[1.0]])
    with pytest.raises(TypeError, match="'confmaps' must be a torch tensor or a numpy array"):
        local_session.run_torch([[1.0]])


def test_device_tensor_on_cpu_session(local_session):
    meta = torch.zeros(1, 3, 8, 8, device="meta")  # stands in for a device tensor
    with pytest.raises(ValueError, match="'confmaps' is a meta tensor; run.. takes host arrays"):
        local_session.run(meta)
    with pytest.raises(ValueError, match="'confmaps' is on meta"):
        local_session.run_torch(meta)


def test_unknown_provider_and_model(models):
    allowed = "provider must be one of 'auto', 'cuda', 'cpu', got 'gpu'"
    with pytest.raises(ValueError, match=allowed):
        open_session(models["local"], "gpu")
    with pytest.raises(ValueError, match="provider must be one of"):
        open_session(models["local"], "CUDAExecutionProvider")
    with pytest.raises(FileNotFoundError, match="model: no ONNX file at"):
        open_session(models["local"].with_name("missing.onnx"), "cpu")
    with pytest.raises(TypeError, match="model must be a path"):
        open_session(123, "cpu")


# --------------------------------------------------------------------------- providers


def test_cpu_provider(models):
    session = open_session(models["local"], "cpu")
    assert session.provider == "CPUExecutionProvider"
    assert session.providers == ["CPUExecutionProvider"]


def test_cuda_on_this_machine_raises_or_really_runs_cuda(models, capfd):
    """Never a CPU session when CUDA was asked for; here (no GPU) it must be the error."""
    assert "CUDAExecutionProvider" in ort.get_available_providers()  # listed, cannot load
    if GPU_MACHINE:
        assert open_session(models["local"], "cuda").provider == "CUDAExecutionProvider"
        return
    with pytest.raises(ProviderUnavailableError) as info:
        open_session(models["local"], "cuda")
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "CUDAExecutionProvider was requested (provider='cuda') but did not load" in message
    assert "the session's providers are ['CPUExecutionProvider']" in message
    assert "CUDA and cuDNN libraries" in message and "onnxruntime-gpu" in message
    # ORT's own reason is in the message instead of on stderr.
    assert "ONNX Runtime said:" in message and "CUDAExecutionProvider" in message.split(
        "ONNX Runtime said:"
    )[1]
    assert "\x1b[" not in message
    assert "onnxruntime" not in capfd.readouterr().err


def test_auto_falls_back_to_cpu_here_and_says_so(models, monkeypatch, capfd, caplog):
    monkeypatch.setattr(runtime, "_fallback_warned", False)
    if GPU_MACHINE:
        assert open_session(models["local"], "auto").provider == "CUDAExecutionProvider"
        return
    with caplog.at_level(logging.INFO, logger="peaklayers.runtime"):
        with pytest.warns(ProviderFallbackWarning, match="runs on CPUExecutionProvider"):
            session = open_session(models["local"], "auto")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the warning is shown once per process
            again = open_session(models["local"], "auto")
    for s in (session, again):
        assert s.provider == "CPUExecutionProvider"
        assert s.providers == ["CPUExecutionProvider"]
        assert "CUDAExecutionProvider was requested (provider='auto')" in s.fallback_reason
    assert sum("provider='auto' runs on CPU" in r.getMessage() for r in caplog.records) == 2
    assert "onnxruntime" not in capfd.readouterr().err
    outputs = session.run(RUN_CASES["1x17x29"].numpy())  # and it runs
    assert len(outputs["vals"]) > 0


class FakeCudaSession:
    """A real CPU session that reports the providers a CUDA machine would."""

    requested = []

    def __init__(self, source, options, providers, loaded):
        FakeCudaSession.requested.append(providers)
        self._session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self._loaded = loaded

    def get_providers(self):
        return list(self._loaded)

    def __getattr__(self, name):
        return getattr(self._session, name)


def fake_sessions(monkeypatch, loaded):
    FakeCudaSession.requested = []
    monkeypatch.setattr(
        runtime,
        "_create_session",
        lambda source, options, providers: FakeCudaSession(source, options, providers, loaded),
    )
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: list(loaded))


@pytest.mark.parametrize("provider", ["cuda", "auto"])
def test_cuda_success_path_with_fake_session(models, monkeypatch, provider):
    fake_sessions(monkeypatch, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "_fallback_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning when CUDA loaded
        session = open_session(models["local"], provider, device_id=1)
    assert session.provider == "CUDAExecutionProvider"
    assert session.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session.device_id == 1 and session.fallback_reason is None
    # CUDA was requested on the right device, with CPU only as ORT's fallback for nodes.
    assert FakeCudaSession.requested == [
        [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    ]


def test_cuda_verification_uses_get_providers(models, monkeypatch):
    """CUDA listed as available but absent from get_providers() is an error, wherever run."""
    fake_sessions(monkeypatch, ["CPUExecutionProvider"])
    monkeypatch.setattr(
        runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPU"]
    )
    with pytest.raises(ProviderUnavailableError, match=r"providers are \['CPUExecutionProvider'\]"):
        open_session(models["local"], "cuda")


def test_cpu_only_onnxruntime_package(models, monkeypatch):
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(runtime, "_fallback_warned", False)
    with pytest.raises(ProviderUnavailableError, match="package has no CUDAExecutionProvider"):
        open_session(models["local"], "cuda")
    with pytest.warns(ProviderFallbackWarning, match="install onnxruntime-gpu"):
        session = open_session(models["local"], "auto")
    assert session.provider == "CPUExecutionProvider"


def test_cuda_tensor_needs_cuda_session(local_session):
    """The device check of run_torch, without a GPU: a CUDA device object is enough."""
    with pytest.raises(ValueError, match="'confmaps' is on cuda:0 but this session runs on CPU"):
        local_session._check_device("confmaps", torch.device("cuda", 0))
    local_session._check_device("confmaps", torch.device("cpu"))  # fine


def test_native_stderr_capture_on_error_becomes_a_note_not_output(capfd):
    """ONNX Runtime's log of a failed session creation goes with the error, not to stderr."""
    import os

    with pytest.raises(KeyError) as info:
        with _native_stderr_captured() as captured:
            os.write(2, b"\x1b[1;31mnative line\x1b[m\n")
            raise KeyError("x")
    assert captured.text == "native line"
    assert "native line" not in capfd.readouterr().err
    assert info.value.__notes__ == ["ONNX Runtime's log:\nnative line"]


def test_failed_cuda_session_creation_prints_nothing(monkeypatch, capfd):
    """provider='cuda' or 'auto': a model ONNX Runtime refuses after it tried to load CUDA."""
    import os

    from peaklayers.serving import runtime as serving_runtime

    def refuse(source, options, providers):
        os.write(2, b"\x1b[1;31m2026 [E:onnxruntime:Default] Failed to load libcublasLt\x1b[m\n")
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : cannot create the session")

    monkeypatch.setattr(serving_runtime, "_create_session", refuse)
    for provider in ("cuda", "auto"):
        with pytest.raises(RuntimeError, match="cannot create the session"):
            serving_runtime.open_session(b"model bytes", provider)
    assert capfd.readouterr().err == ""
