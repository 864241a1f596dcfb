"""Argument checks shared by layers, transforms and loaders.

Every check raises a typed error that names the argument, the value received and what is
allowed, so a user can fix the call without reading our code.
"""
from __future__ import annotations

import weakref
from typing import Any, Sequence

import torch
from dgl.base import DGLError

__all__ = [
    "NonFiniteError",
    "check_homogeneous",
    "check_nonempty",
    "check_feat",
    "all_finite",
    "check_positive_int",
    "check_probability",
    "check_choice",
    "check_param_dtype",
    "check_output_finite",
    "check_global_input",
    "check_nonnegative_float",
]


class NonFiniteError(ValueError):
    """A tensor holds NaN or Inf. Raised by :func:`check_feat`; the training loop reports one
    raised inside a model (whose inputs were checked when loaded) as a diverged run."""


def check_homogeneous(graph: Any, name: str = "graph", allow_block: bool = True) -> None:
    """Reject objects that are not DGLGraphs, and heterographs (several node or edge types)."""
    from dgl import DGLGraph

    if not isinstance(graph, DGLGraph):
        raise TypeError(f"{name} must be a dgl.DGLGraph, got {type(graph).__name__}")
    if graph.is_block:
        if not allow_block:
            raise DGLError(f"{name} is a block (message flow graph); pass a full graph instead")
        if len(graph.srctypes) == 1 and len(graph.dsttypes) == 1 and len(graph.canonical_etypes) == 1:
            return
    elif len(graph.ntypes) == 1 and len(graph.canonical_etypes) == 1:
        return
    raise DGLError(
        f"{name} must be homogeneous (one node type, one edge type), got node types "
        f"{graph.ntypes} and edge types {graph.canonical_etypes}; convert it with dgl.to_homogeneous"
    )


def check_nonempty(graph: Any, name: str = "graph") -> None:
    """Reject graphs without nodes (an attention over nothing has no defined output)."""
    num_nodes = graph.num_dst_nodes() if graph.is_block else graph.num_nodes()
    if num_nodes == 0:
        raise DGLError(f"{name} has no nodes; attention needs at least one node")


def check_feat(
    feat: Any,
    name: str = "feat",
    *,
    rows: int | None = None,
    last_dim: int | None = None,
    ndim: int | Sequence[int] | None = 2,
    finite: bool = True,
) -> None:
    """Check a floating-point feature tensor's type, shape and values.

    ``rows`` is the expected first dimension (number of nodes), ``last_dim`` the expected feature
    size, ``ndim`` the allowed number of dimensions. ``finite=True`` rejects NaN and Inf: an
    attention layer fed NaN returns NaN everywhere its softmax touches, far from the cause.
    """
    if not isinstance(feat, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(feat).__name__}")
    if not torch.is_floating_point(feat):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {feat.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if feat.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(feat.shape)}")
    if rows is not None and feat.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per node), got shape {tuple(feat.shape)}")
    if last_dim is not None and feat.shape[-1] != last_dim:
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {tuple(feat.shape)}")
    if finite and not all_finite(feat):
        raise NonFiniteError(f"{name} contains NaN or Inf values")


def all_finite(x: torch.Tensor) -> bool:
    """Whether ``x`` has no NaN or Inf, in one pass over it on the common path.

    A non-finite value makes the sum non-finite, so a finite sum proves the tensor is finite; only
    a non-finite sum (a real NaN/Inf, or an overflow) needs the exact elementwise test. The sum runs
    in ``x``'s own dtype: a float64 sum would first copy the tensor (1 GB for Coauthor CS's
    features). Large tensors that passed are remembered with their version counter, so the same
    unmodified input (a graph's features, every epoch) is checked once.
    """
    if x.numel() == 0:
        return True
    memo = x.numel() >= _MEMO_MIN_NUMEL and not x.requires_grad and not x.is_inference()
    if memo:
        seen = _FINITE_MEMO.get(id(x))
        if seen is not None and seen[0]() is x and seen[1] == x._version:
            return True
    finite = bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())
    if finite and memo:
        key = id(x)
        _FINITE_MEMO[key] = (weakref.ref(x, lambda _, key=key: _FINITE_MEMO.pop(key, None)), x._version)
    return finite


# Tensors of at least this many elements that all_finite found finite: id -> (weakref, version).
_MEMO_MIN_NUMEL = 1 << 20
_FINITE_MEMO: dict[int, tuple[weakref.ref, int]] = {}


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (bools rejected), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a bool (``"no"`` or ``0`` would otherwise read as a flag), else raise."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_nonnegative_float(value: Any, name: str, positive: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number >= 0 (> 0 with ``positive``), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    if not (value > 0 if positive else value >= 0) or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def check_probability(value: Any, name: str, allow_one: bool = False) -> float:
    """Return ``value`` if it is a number in [0, 1) (or [0, 1] with ``allow_one``), else raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    upper_ok = value <= 1 if allow_one else value < 1
    if not (0 <= value and upper_ok):
        raise ValueError(f"{name} must be in [0, {'1]' if allow_one else '1)'}, got {value}")
    return float(value)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise naming the allowed values."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_param_dtype(feat: torch.Tensor, weight: torch.Tensor, name: str = "feat") -> None:
    """Reject features whose dtype differs from a layer's parameters (unless autocast is on),
    naming both dtypes and the fix, instead of torch's raw matmul error."""
    if feat.dtype == weight.dtype or torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled():
        return
    raise TypeError(
        f"{name} has dtype {feat.dtype} but the layer's parameters are {weight.dtype}; "
        f"convert one of them (layer.to({feat.dtype}) or {name}.to({weight.dtype}))"
    )


def check_output_finite(out: torch.Tensor, feat: torch.Tensor, name: str = "feat") -> None:
    """Raise :class:`NonFiniteError` when a layer's output is not finite although its (checked,
    finite) input is: huge inputs overflow the attention logits, and a layer must never return NaN
    from finite input. One cheap pass over the output on the common path."""
    if all_finite(out):
        return
    largest = float(feat.detach().abs().max()) if feat.numel() else 0.0
    raise NonFiniteError(
        f"the layer's output is not finite although {name} is (largest |{name}| = {largest:.3g}): "
        f"the attention logits overflow {feat.dtype}; scale {name} down (e.g. the normalize_features "
        f"transform, or a LayerNorm before the layer) or compute in torch.float64")


def check_global_input(graph: Any, feat: Any, in_feats: int, weight: torch.Tensor) -> int:
    """The checks every global-attention layer makes on its input: a homogeneous, non-empty graph
    (not a block: attention over a sampled frontier is not global), finite ``(N, in_feats)``
    features of the weights' dtype. Returns ``N``."""
    check_homogeneous(graph, "graph", allow_block=False)
    check_nonempty(graph, "graph")
    num_nodes = graph.num_nodes()
    check_feat(feat, "feat", rows=num_nodes, last_dim=in_feats, ndim=2)
    check_param_dtype(feat, weight)
    return num_nodes
