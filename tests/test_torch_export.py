"""``torch.export`` of every peak layer with dynamic batch, height and width (SPEC §4).

Each program is exported once (see export_helpers) and run at sizes other than the
export size; it must equal eager PyTorch exactly but for refined points (1e-5 px).
"""

import pytest
import torch

import cases
from export_helpers import (
    CHANNELS,
    KINDS,
    assert_same,
    eager,
    image_cases,
    make_layer,
    make_model,
    map_cases,
    program,
)
from peaklayers import export_program

FP32_CASES = map_cases(torch.float32)
FP16_CASES = map_cases(torch.float16)
IMAGE_CASES = image_cases(torch.float32)


def ids(case_list):
    return [name for name, _ in case_list]


def run(prog, x):
    with torch.no_grad():
        return tuple(prog.module()(x))


@pytest.mark.parametrize("refinement", ["integral", None])
@pytest.mark.parametrize("kind", KINDS)
def test_program_matches_eager(kind, refinement):
    prog = program(kind, refinement)
    module = prog.module()
    layer = make_layer(kind, refinement)
    for name, cms in FP32_CASES:
        with torch.no_grad():
            out = tuple(module(cms))
        try:
            assert_same(out, eager(layer, cms), refined=refinement is not None)
        except AssertionError as error:
            raise AssertionError(f"case {name}: {error}") from error


@pytest.mark.parametrize("kind", ["local", "topk"])
def test_merged_flat_tops_program_matches_eager(kind):
    module = program(kind, flat_tops="merge").module()
    for name, cms in FP32_CASES:
        with torch.no_grad():
            out = tuple(module(cms))
        try:
            assert_same(out, eager(make_layer(kind, flat_tops="merge"), cms))
        except AssertionError as error:
            raise AssertionError(f"case {name}: {error}") from error


@pytest.mark.parametrize("kind", KINDS)
def test_fp16_program_matches_eager(kind):
    module = program(kind, dtype=torch.float16).module()
    for name, cms in FP16_CASES:
        with torch.no_grad():
            out = tuple(module(cms))
        try:
            assert_same(out, eager(make_layer(kind), cms))
        except AssertionError as error:
            raise AssertionError(f"case {name}: {error}") from error


@pytest.mark.parametrize("kind", KINDS)
def test_head_and_layer_program_matches_eager(kind):
    module = program(kind, head=True).module()
    model = make_model(kind, head=True)
    for name, x in IMAGE_CASES:
        with torch.no_grad():
            out = tuple(module(x))
        try:
            assert_same(out, eager(model, x))
        except AssertionError as error:
            raise AssertionError(f"case {name}: {error}") from error


@pytest.mark.parametrize("kind", KINDS)
def test_program_shapes_are_symbolic(kind):
    """Batch, height and width are symbols of the program, not the example's sizes."""
    prog = program(kind)
    (placeholder,) = [
        node for node in prog.graph.nodes
        if node.op == "placeholder" and node.name in prog.graph_signature.user_inputs
    ]
    shape = placeholder.meta["val"].shape
    assert [isinstance(d, torch.SymInt) for d in shape] == [True, False, True, True]
    assert shape[1] == CHANNELS


def test_program_from_a_size_one_example():
    prog = export_program(make_layer("global"), cases.noisy(1, CHANNELS, 1, 1))
    cms = cases.gaussians(3, CHANNELS, 10, 13, seed=4)
    assert_same(run(prog, cms), eager(make_layer("global"), cms))


def test_program_bad_input():
    with pytest.raises(ValueError, match="example must be a 4-D tensor"):
        export_program(make_layer("local"), torch.rand(CHANNELS, 8, 8))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export_program(print, torch.rand(2, CHANNELS, 8, 8))
