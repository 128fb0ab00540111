"""Running exported graphs with ONNX Runtime on the provider you choose.

The code lives in :mod:`peaklayers.serving.runtime`; this module is its public name.
"""

from .serving.runtime import *  # noqa: F403
from .serving.runtime import __all__  # noqa: F401
