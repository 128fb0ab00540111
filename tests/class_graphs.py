"""Graphs with a class-map lookup, exported once per test process (like export_helpers).

- ``head``: images -> a conv head giving confidence maps and class maps -> a peak layer
  -> :class:`ClassMapLookup`; outputs: the layer's, then ``class_probs``.
- ``two_inputs``: ``(confmaps, class_maps)`` -> peaks and ``class_probs`` (the peak graph
  the export tool appends to a user's ONNX model with class maps).

Used by tests/test_export_onnx_io.py (parity with eager) and tests/test_graph_audit.py.
"""

import functools
import warnings

import torch
from torch import nn

import cases
from export_helpers import _TMP, CHANNELS, EXPORT_SHAPE, IMAGE_CHANNELS, images, make_layer
from peaklayers import ClassMapLookup, export_onnx

CLASSES = 2
FORMS = ("head", "two_inputs")


def _dyadic_conv(channels_in, channels_out, seed):
    """A 3x3 conv with weights in multiples of 1/4: exact in float32 on every backend
    for the dyadic images of export_helpers (see ``dyadic_head`` there)."""
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 3, conv.weight.shape, generator=gen) / 4)
        conv.bias.copy_(torch.randint(-2, 3, conv.bias.shape, generator=gen) / 4)
    return conv


class HeadPeaksClasses(nn.Module):
    """images -> (confidence maps, class maps) -> peaks, then each peak's class probs."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.head = nn.Sequential(_dyadic_conv(IMAGE_CHANNELS, CHANNELS + CLASSES, 0), nn.ReLU())
        self.layer = make_layer(kind)
        self.lookup = ClassMapLookup()

    def forward(self, image):
        maps = self.head(image)
        outputs = self.layer(maps[:, :CHANNELS])
        sample_inds = outputs[2] if self.kind == "local" else None
        return (*outputs, self.lookup(maps[:, CHANNELS:], outputs[0], sample_inds))


class PeaksAndClasses(nn.Module):
    """(confmaps, class_maps) -> peaks, then each peak's class probabilities."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.layer = make_layer(kind)
        self.lookup = ClassMapLookup()

    def forward(self, confmaps, class_maps):
        outputs = self.layer(confmaps)
        sample_inds = outputs[2] if self.kind == "local" else None
        return (*outputs, self.lookup(class_maps, outputs[0], sample_inds))


def make_model(kind, form):
    return (HeadPeaksClasses if form == "head" else PeaksAndClasses)(kind).eval()


def class_maps(samples, height, width, seed=0):
    """Class probabilities in multiples of 1/16 (exact everywhere), some tied."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (samples, CLASSES, height, width), generator=gen) / 16


def example(form):
    samples, _, height, width = EXPORT_SHAPE
    if form == "head":
        return images(samples, height, width, seed=99)
    return (cases.gaussians(*EXPORT_SHAPE, seed=99), class_maps(samples, height, width, 99))


@functools.cache
def exported(kind, exporter, form):
    """Path of the ONNX graph of one configuration, exported once per test process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(make_model(kind, form), example(form),
                           _TMP / f"classes-{kind}-{exporter}-{form}.onnx",
                           dynamo=exporter == "dynamo",
                           input_name="image" if form == "head" else "confmaps")


@functools.cache
def session(kind, exporter, form):
    import onnxruntime as ort

    return ort.InferenceSession(str(exported(kind, exporter, form)),
                                providers=["CPUExecutionProvider"])
