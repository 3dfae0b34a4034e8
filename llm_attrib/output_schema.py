"""The contract of the JSON llm_attrib writes: a versioned JSON Schema (``schemas/outputs-v1.json``, package data).

Kinds (`KINDS`): ``trace-report`` (``llm-attrib trace --json``), ``trace-scores`` (a trace recipe's scores.json),
``audit`` (audit.json), ``values`` (``llm-attrib value --out *.json`` and a value recipe's values.json). Sign: a
positive attribution score means the training record raises the output's log Pr(completion | prompt); a higher
value means a more valuable row. Outputs may add keys within a version; removing or retyping one makes a new version.

`validate` checks a document against the subset of JSON Schema (draft 2020-12) that the schema uses (`KEYWORDS`), so
no validator package is needed; a keyword outside it is refused rather than ignored.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

VERSION = 1
KINDS = {"trace-report": "trace_report", "trace-scores": "trace_scores", "audit": "audit", "values": "values"}
KEYWORDS = {"$ref", "type", "required", "properties", "items", "prefixItems", "minItems", "maxItems", "minimum",
            "maximum", "const", "enum", "allOf"}
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


class SchemaError(ValueError):
    """A document that does not follow the schema; the message names the path (``$.queries[0].top``)."""


@functools.cache
def schema(version: int = VERSION) -> dict[str, Any]:
    """The whole schema document of ``version`` (its ``$defs`` hold one definition per kind)."""
    return json.loads(resources.files("llm_attrib").joinpath(f"schemas/outputs-v{version}.json").read_text())


def validate(document: Any, kind: str, version: int = VERSION) -> None:
    """Raise `SchemaError` unless ``document`` (parsed JSON) is a valid ``kind`` output of schema ``version``."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; choose one of {', '.join(KINDS)}")
    root = schema(version)
    _check(document, {"$ref": f"#/$defs/{KINDS[kind]}"}, root, "$")


def _check(value: Any, rule: dict[str, Any], root: dict[str, Any], path: str) -> None:
    unknown = set(rule) - KEYWORDS - ANNOTATIONS
    if unknown:
        raise ValueError(f"schema keyword(s) {sorted(unknown)} at {path} are not supported by this validator")
    if "$ref" in rule:
        target = root
        for part in rule["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        _check(value, target, root, path)
    for part in rule.get("allOf", ()):
        _check(value, part, root, path)
    if "type" in rule:
        allowed = [rule["type"]] if isinstance(rule["type"], str) else rule["type"]
        if not any(TYPES[name](value) for name in allowed):
            raise SchemaError(f"{path}: expected {' or '.join(allowed)}, got {type(value).__name__} {value!r:.60}")
    if "const" in rule and value != rule["const"]:
        raise SchemaError(f"{path}: expected {rule['const']!r}, got {value!r:.60}")
    if "enum" in rule and value not in rule["enum"]:
        raise SchemaError(f"{path}: expected one of {rule['enum']}, got {value!r:.60}")
    if TYPES["number"](value):
        if "minimum" in rule and value < rule["minimum"]:
            raise SchemaError(f"{path}: {value} is below the minimum {rule['minimum']}")
        if "maximum" in rule and value > rule["maximum"]:
            raise SchemaError(f"{path}: {value} is above the maximum {rule['maximum']}")
    if isinstance(value, dict):
        missing = [key for key in rule.get("required", ()) if key not in value]
        if missing:
            raise SchemaError(f"{path}: missing key(s) {', '.join(missing)}")
        for key, part in rule.get("properties", {}).items():
            if key in value:
                _check(value[key], part, root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < rule.get("minItems", 0) or len(value) > rule.get("maxItems", len(value)):
            raise SchemaError(f"{path}: {len(value)} items, expected {rule.get('minItems', 0)} to "
                              f"{rule.get('maxItems', 'any')}")
        prefix = rule.get("prefixItems", [])
        for i, item in enumerate(value):
            part = prefix[i] if i < len(prefix) else rule.get("items")
            if part is not None:
                _check(item, part, root, f"{path}[{i}]")
