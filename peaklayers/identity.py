"""Identity on the host, with the reference library's names (``sleap_nn.inference.identity``).

The code lives in :mod:`peaklayers.serving.identity`; this module is its public name.
"""

from .serving.identity import *  # noqa: F403
from .serving.identity import __all__  # noqa: F401
