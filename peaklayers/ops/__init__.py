"""Graph ops: pure torch, exported with the model (SPEC §1-§3.1).

maps → peaks (:mod:`.global_peaks`, :mod:`.local_peaks`, :mod:`.topk_peaks`, on
:mod:`.nms` and :mod:`.flat_tops`) → refinement (:mod:`.integral`) → identity lookup
(:mod:`.class_maps`). Nothing here imports onnx, onnxruntime or scipy.
"""
