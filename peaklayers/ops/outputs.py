"""What a layer returns, described once: each output's name, axes and dtype.

Every peak layer carries its description as the class attribute ``outputs``; the
exporter (names, dynamic first axis, declared shapes), the tool (settings, report,
Triton config, reading results back) and the tests read it from there.

Axes are names or fixed sizes: ``"batch"`` (samples), ``"peaks"`` (a data-dependent
count over the whole batch), ``"channels"``, ``"k"`` (top-K slots), ``"classes"``,
and ``2`` for ``(x, y)``. A dtype is a numpy/torch name, or ``"maps"``: the dtype of
the maps the output was read from.
"""

from typing import NamedTuple, Union

Axis = Union[str, int]


class Output(NamedTuple):
    """One output of a layer.

    Attributes:
        name (str): the output's name in exported graphs.
        axes (tuple of str or int): its axes, symbolic or fixed (see module docstring).
        dtype (str): ``"float32"``, ``"int32"``, ``"bool"`` or ``"maps"``.
    """

    name: str
    axes: tuple[Axis, ...]
    dtype: str

    def shape(self, sizes: dict[str, int]) -> list[Axis]:
        """The axes with the known ``sizes`` filled in; unknown names stay names."""
        return [sizes.get(a, a) if isinstance(a, str) else a for a in self.axes]

