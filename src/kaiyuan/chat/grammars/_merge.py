"""Merging the schemas of an ``allOf`` (and of ``$ref`` with sibling keywords) into one schema.

Owns: keyword-by-keyword intersection for the common cases (types, required, properties, bounds, enums, items,
closed objects). Where two schemas constrain the same thing in ways that do not combine (two different
patterns or formats), it raises ``UnsupportedFeature`` naming the keyword.
Must not know: grammar trees; it receives a ``resolve`` callback for ``$ref``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kaiyuan.chat.grammars._keywords import ANNOTATIONS, invalid, unsupported

Schema = dict[str, Any]
Path = tuple[str, ...]

_MAX_KEYS = ("minimum", "minLength", "minItems", "minProperties")
_MIN_KEYS = ("maximum", "maxLength", "maxItems", "maxProperties")


def canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def normalize_bounds(schema: Schema) -> Schema:
    """Draft-4 boolean ``exclusiveMinimum``/``exclusiveMaximum`` -> the numeric form of later drafts."""
    out = dict(schema)
    for excl, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(excl), bool) and out.pop(excl) and bound in out:
            out[excl] = out.pop(bound)
    return out


def _types(schema: Schema) -> set[str] | None:
    t = schema.get("type")
    if t is None:
        return None
    return {t} if isinstance(t, str) else set(t)


def _intersect_types(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    out = a & b
    if ("integer" in a and "number" in b) or ("integer" in b and "number" in a):
        out.add("integer")
    return out


def merge_all(
    schemas: list[tuple[Any, Path]], resolve: Callable[[Schema, Path], tuple[Schema, Path]]
) -> Schema | bool:
    """The intersection of ``schemas`` (each with its path) as one schema (``False`` when one is ``false``)."""
    result: Schema = {}
    for raw, path in schemas:
        if raw is True:
            continue
        if raw is False:
            return False
        if not isinstance(raw, dict):
            raise invalid(path, "a schema must be an object or a boolean")
        schema, where = resolve(raw, path)
        if "allOf" in schema:
            inner = merge_all(all_of_parts(schema, where), resolve)
            if inner is False:
                return False
            schema = inner if isinstance(inner, dict) else {}
        result = _merge_two(result, normalize_bounds(schema), where)
    return result


def all_of_parts(schema: Schema, path: Path) -> list[tuple[Any, Path]]:
    """A schema with ``allOf`` as the list of its parts: its other keywords, then each ``allOf`` entry."""
    parts = schema["allOf"]
    if not isinstance(parts, list) or not parts:
        raise invalid((*path, "allOf"), "'allOf' must be a non-empty array")
    rest = {k: v for k, v in schema.items() if k != "allOf"}
    return [(rest, path), *((p, (*path, "allOf", str(i))) for i, p in enumerate(parts))]


def _merge_two(a: Schema, b: Schema, path: Path) -> Schema:
    out = dict(a)
    for key, value in b.items():
        if key not in out or key in ANNOTATIONS:
            out.setdefault(key, value)
            continue
        mine = out[key]
        if canonical(mine) == canonical(value):
            continue
        if key == "type":
            types = _intersect_types(_types(a), _types(b))
            out["type"] = sorted(types or [])
            if not types:
                raise invalid(path, "allOf combines schemas with no type in common")
        elif key == "required":
            out["required"] = list(dict.fromkeys([*mine, *value]))
        elif key in _MAX_KEYS or key == "exclusiveMinimum":
            out[key] = max(mine, value)
        elif key in _MIN_KEYS or key == "exclusiveMaximum":
            out[key] = min(mine, value)
        elif key == "enum":
            allowed = {canonical(v) for v in value}
            out["enum"] = [v for v in mine if canonical(v) in allowed]
            if not out["enum"]:
                raise invalid(path, "allOf combines enums with no value in common")
        elif key == "const":
            raise invalid(path, "allOf combines different 'const' values")
        elif key == "properties":
            props = dict(mine)
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out["properties"] = props
        elif key in ("items", "additionalProperties", "propertyNames", "additionalItems"):
            if mine is False or value is False:
                out[key] = False
            else:
                out[key] = {"allOf": [mine, value]}
        elif key == "prefixItems":
            longest = max(len(mine), len(value))
            out[key] = [
                {"allOf": [x[i] for x in (mine, value) if i < len(x)]}
                if i < min(len(mine), len(value))
                else (mine[i] if i < len(mine) else value[i])
                for i in range(longest)
            ]
        elif key == "uniqueItems":
            out[key] = bool(mine) or bool(value)
        elif key in ("anyOf", "oneOf"):
            if key == "oneOf":
                raise unsupported("oneOf", path, "allOf combines two oneOf lists")
            out[key] = [{"allOf": [x, y]} for x in mine for y in value]
        else:
            raise unsupported(key, path, f"allOf combines two different '{key}' values")
    _close_properties(out, a, b, path)
    return out


def _close_properties(out: Schema, a: Schema, b: Schema, path: Path) -> None:
    """A property one side does not declare must satisfy that side's additionalProperties."""
    props = out.get("properties")
    if not isinstance(props, dict):
        return
    for side in (a, b):
        extra = side.get("additionalProperties", True)
        declared = side.get("properties", {})
        if extra is True or not ("properties" in side or "additionalProperties" in side):
            continue
        for name in list(props):
            if name in declared:
                continue
            if extra is False:
                if name in out.get("required", []):
                    raise invalid(path, f"allOf requires property '{name}' that another part forbids")
                del props[name]
            else:
                props[name] = {"allOf": [props[name], extra]}
