"""Graph -> graph transforms: expander edges, virtual nodes, score-driven sparsification."""

TRANSFORMS: dict = {}

__all__ = ["TRANSFORMS"]
