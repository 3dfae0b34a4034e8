"""Recipes: one YAML file describes a whole job, run by ``llm-attrib run recipes/<name>.yaml`` (`llm_attrib.apps.run`).

`schema` holds the `Recipe` dataclasses and their checks; `yaml_parsing` turns a YAML file (plus ``--set``
overrides) into them.
"""

from llm_attrib.recipe.schema import DEMO, DataSpec, GenerateSpec, MethodSpec, OutputSpec, Query, Recipe
from llm_attrib.recipe.yaml_parsing import apply_overrides, load_recipe

__all__ = ["DEMO", "DataSpec", "GenerateSpec", "MethodSpec", "OutputSpec", "Query", "Recipe", "apply_overrides",
           "load_recipe"]
