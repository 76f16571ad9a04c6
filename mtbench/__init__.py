"""mtbench: a plugin-based benchmark framework for multitask learning.

Packages declare plugins as entry points (see :mod:`mtbench.registry`), or register them with
:func:`register`; the registry is read with :func:`get_plugin`, :func:`list_plugins` and
:func:`build_plugin`. Importing this package imports neither TensorFlow nor any plugin, and a
plugin's module is imported when it is built.
"""

from mtbench.registry import (
    KINDS,
    DuplicatePluginError,
    PluginError,
    UnknownPluginError,
    register,
)
from mtbench.registry import build as build_plugin
from mtbench.registry import get as get_plugin
from mtbench.registry import names as list_plugins

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "DuplicatePluginError",
    "PluginError",
    "UnknownPluginError",
    "__version__",
    "build_plugin",
    "get_plugin",
    "list_plugins",
    "register",
]
