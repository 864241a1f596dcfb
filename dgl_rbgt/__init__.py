"""dgl-rbgt: graph transformers for large graphs, as a DGL plugin.

Layers (``dgl_rbgt.nn``), transforms (``dgl_rbgt.transforms``), reference models
(``dgl_rbgt.models``), datasets (``dgl_rbgt.data``) and recipes run by ``dgl-rbgt train``.
Importing the package also makes the layers reachable as ``dgl.nn.<Name>`` (never replacing a
name DGL already has). Subpackages load on first use, so the CLI starts without torch and DGL.
"""
import importlib as _importlib
import os as _os

from . import registration as _registration

__version__ = "0.1.0"

# ogb asks PyPI for a newer version on import; never make network calls behind the user's back.
_os.environ.setdefault("OUTDATED_IGNORE", "1")

_registration.install()

_SUBPACKAGES = ("batching", "config", "data", "distributed", "models", "nn", "sampling", "train", "transforms",
                "utils")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", *_SUBPACKAGES]
