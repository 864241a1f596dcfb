"""dgl-rbgt: graph transformers for large graphs, as a DGL plugin.

Layers (``dgl_rbgt.nn``), transforms (``dgl_rbgt.transforms``), reference models
(``dgl_rbgt.models``), datasets (``dgl_rbgt.data``) and recipes run by ``dgl-rbgt train``.
Importing the package also makes the layers reachable as ``dgl.nn.<Name>`` (never replacing a
name DGL already has).
"""
import os as _os

__version__ = "0.1.0"

# ogb asks PyPI for a newer version on import; never make network calls behind the user's back.
_os.environ.setdefault("OUTDATED_IGNORE", "1")

from . import nn  # noqa: E402  (registers the layers under dgl.nn)

__all__ = ["__version__", "nn"]
