"""Host side: run exported graphs with ONNX Runtime (:mod:`.runtime`) and group peaks into
identities (:mod:`.identity`, solver in :mod:`.assignment`). numpy here; onnx and
onnxruntime are imported by :mod:`.runtime`, scipy only by the large-problem solver.
"""

PROVIDERS = ("auto", "cuda", "cpu")
"""Execution providers :func:`peaklayers.runtime.open_session` accepts."""
