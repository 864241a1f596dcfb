"""Reading recipe YAML safely, with numbers as people write them.

PyYAML implements YAML 1.1, where ``1e-3`` (no dot) is a *string*: a recipe's ``lr: 1e-3`` would
be refused as "not a valid number". :class:`RecipeLoader` is ``yaml.SafeLoader`` (no Python tags,
nothing executed) with YAML 1.2's float rule, so ``1e-3``, ``5E-4`` and ``+1e3`` are floats.
"""
from __future__ import annotations

import re

import yaml

__all__ = ["RecipeLoader", "read_yaml"]

_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-3`` as a float (YAML 1.2), not a string."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def read_yaml(text: str):
    """Parse ``text`` with :class:`RecipeLoader`.

    Examples
    --------
    >>> read_yaml("lr: 1e-3\\nwd: 5E-4\\nepochs: 10\\nname: 1e3x")
    {'lr': 0.001, 'wd': 0.0005, 'epochs': 10, 'name': '1e3x'}
    """
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
