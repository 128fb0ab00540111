"""Whether a graph is being made, for the eager-only shortcuts of the peak layers."""

import torch


def in_graph() -> bool:
    """Whether a graph is being made (traced, exported or compiled): its shapes must
    not depend on the data, and tensors must be made inside it. Scripted code never
    calls this: callers test ``if not torch.jit.is_scripting():`` first, inline, because
    TorchScript skips only a branch under that very test, and the eager branches call
    Python (cached functions) that a saved scripted module cannot hold."""
    # ONNX export needs no flag of its own: the TorchScript-based exporter traces, the
    # dynamo exporter exports (``torch.onnx.is_in_onnx_export`` costs a microsecond).
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )
