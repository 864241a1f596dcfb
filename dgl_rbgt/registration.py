"""Our layers as ``dgl.nn.<Name>``, without importing DGL or torch before they are needed.

``import dgl_rbgt`` only installs a hook: when ``dgl.nn`` is (or already was) imported, it gets a
module ``__getattr__`` (PEP 562) that imports :mod:`dgl_rbgt.nn` the first time one of
:data:`LAYER_NAMES` is looked up; :mod:`dgl_rbgt.nn` then sets the real attributes. So the CLI
starts in a fraction of a second, yet ``dgl.nn.RBAConv`` works after ``import dgl_rbgt``. Names
DGL defines itself are never replaced (module ``__getattr__`` only sees missing names).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys

__all__ = ["LAYER_NAMES", "install"]

#: The layers of :mod:`dgl_rbgt.nn` that are registered under ``dgl.nn``.
LAYER_NAMES = ("RBAConv", "FullAttentionConv", "SGFormerAttention", "ExphormerConv", "ScoreEstimatorConv",
               "SpexphormerConv", "MemoryTransformer")


def _add_lookup(module) -> None:
    """Give ``module`` (``dgl.nn``) a ``__getattr__`` that resolves our layer names."""
    previous = getattr(module, "__getattr__", None)

    def __getattr__(name: str):
        if name in LAYER_NAMES:
            from . import nn  # its import registers every layer on dgl.nn

            return getattr(nn, name)
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__


class _AfterDglNn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``dgl.nn`` with the normal machinery, then adds the lookup once it has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "dgl.nn":
            return None
        sys.meta_path.remove(self)  # one use; also keeps the search below from finding us
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _add_lookup(module)


def install() -> None:
    """Make our layers reachable as ``dgl.nn.<Name>`` (at once if DGL is loaded, else on its import)."""
    if "dgl.nn" in sys.modules:
        _add_lookup(sys.modules["dgl.nn"])
    elif not any(isinstance(f, _AfterDglNn) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterDglNn())
