"""Attention layers that drop into DGL models like ``dgl.nn`` convolutions."""
import dgl.nn as _dgl_nn

_LAYERS: dict = {}


def _register(layers: dict) -> None:
    """Expose our layers as ``dgl.nn.<Name>`` without overwriting anything DGL defines."""
    for name, cls in layers.items():
        if not hasattr(_dgl_nn, name):
            setattr(_dgl_nn, name, cls)


_register(_LAYERS)

__all__ = sorted(_LAYERS)
