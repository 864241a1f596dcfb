"""Recipes: the YAML schema, ``--set`` overrides, and the one registry of names.

- :mod:`.schema`: :func:`load_recipe` / :func:`parse_recipe` validate a recipe before any work
  (every error at once, with key paths); :func:`recipe_to_yaml` writes the resolved recipe;
- :mod:`.sections`: the fixed sections (``dataset``, ``train``, ``output``);
- :mod:`.distributed`: the ``distributed:`` section (hosts, ports, partitioning);
- :mod:`.registry`: ``MODELS``, ``TRANSFORMS``, ``BATCHINGS`` (imported on first use: building the
  schema needs the model classes, reading a recipe file does not);
- :mod:`.overrides`, :mod:`.yamlio`, :mod:`.messages`: ``--set``, YAML reading, error lines.

Example
-------
>>> from dgl_rbgt.config import parse_recipe
>>> r = parse_recipe({"name": "demo", "dataset": {"name": "cora"}, "model": {"name": "gcn"}},
...                  overrides=["train.lr=1e-3"])
>>> r.train.lr, r.model.hidden
(0.001, 64)
"""
from .distributed import DistributedSection, HostSection, parse_distributed, partition_dir_of
from .overrides import apply_overrides
from .schema import (Recipe, check_recipe_for_distributed, load_distributed_recipe, load_recipe, parse_recipe,
                     recipe_to_yaml)
from .sections import DatasetSection, OutputSection, TrainSection

__all__ = ["Recipe", "load_recipe", "parse_recipe", "recipe_to_yaml", "apply_overrides", "DatasetSection",
           "TrainSection", "OutputSection", "DistributedSection", "HostSection", "parse_distributed",
           "partition_dir_of", "load_distributed_recipe", "check_recipe_for_distributed"]
