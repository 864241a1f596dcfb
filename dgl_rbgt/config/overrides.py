"""``--set key.path=value`` overrides, applied to a recipe's data before validation."""
from __future__ import annotations

from typing import Any

import yaml

from ..errors import RecipeError
from .yamlio import read_yaml

__all__ = ["apply_overrides"]


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (value parsed as YAML) to a nested dict, in order. In a
    list, an index equal to its length appends (``transforms.1={name: cast_features}``)."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key.path=value, e.g. train.lr=0.001")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise RecipeError(f"--set {item!r}: empty key in path {path!r}")
        try:
            value = read_yaml(raw)
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item!r}: value is not valid YAML ({exc.problem})") from None
        node: Any = data
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            where = ".".join(keys[:i + 1])
            if isinstance(node, list):
                # the list's length itself appends, as the last key (transforms.2={name: ...})
                limit = len(node) + 1 if last else len(node)
                if not key.isdigit() or int(key) >= limit:
                    raise RecipeError(f"--set {item!r}: {where} must be an index below {limit}"
                                      + (" (its length appends)" if last else ""))
                key = int(key)
                if key == len(node):
                    node.append(None)
            elif not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {'.'.join(keys[:i])} is not a mapping")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return data
