"""Proving that the branches of a ``oneOf`` exclude each other, so generating from one branch is enough.

``oneOf`` means *exactly one* branch matches. A grammar can only offer "one of these branches"; that is the same
thing only when no generated value of one branch also matches another. This module proves that for the usual
shapes (different types, different constants, a discriminator property, a property one branch requires and
the other never generates or forbids). When it cannot, the compiler refuses the schema instead of pretending.
Must not know: grammar trees.

The left side is a branch *as kaiyuan generates it*: objects carry only their declared properties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Schema = dict[str, Any]
Validates = Callable[[object, object], bool]

_VALUE_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _value_type(value: object) -> str:
    if value is None:
        return "null"
    return _VALUE_TYPES.get(type(value), "object")


def finite_values(schema: Schema) -> list[object] | None:
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    return None


def generated_types(schema: Schema, inferred: Callable[[Schema], set[str]]) -> set[str]:
    values = finite_values(schema)
    if values is not None:
        return {_value_type(v) for v in values}
    return inferred(schema)


def accepted_types(schema: Schema) -> set[str] | None:
    t = schema.get("type")
    if t is None:
        return None
    types = {t} if isinstance(t, str) else set(t)
    if schema.get("nullable"):
        types.add("null")
    return types


def _types_disjoint(generated: set[str], accepted: set[str] | None) -> bool:
    if accepted is None:
        return False
    for t in generated:
        if (
            t in accepted
            or (t == "integer" and "number" in accepted)
            or (t == "number" and "integer" in accepted)
        ):
            return False
    return True


def excludes(
    gen: Schema,
    other: Schema,
    *,
    validates: Validates,
    inferred: Callable[[Schema], set[str]],
    generates_extra_keys: Callable[[Schema], bool],
    closed: Callable[[Schema], bool],
) -> bool:
    """True when no value generated from ``gen`` validates against ``other``."""
    values = finite_values(gen)
    if values is not None:
        return not any(validates(v, other) for v in values)
    gen_types = generated_types(gen, inferred)
    if _types_disjoint(gen_types, accepted_types(other)):
        return True
    if gen_types != {"object"}:
        return False
    gen_props: dict[str, Any] = gen.get("properties", {}) or {}
    gen_required = set(gen.get("required", []))
    other_props: dict[str, Any] = other.get("properties", {}) or {}
    # ``other`` requires a key that ``gen`` never writes.
    if not generates_extra_keys(gen) and any(
        k not in gen_props and k not in gen_required for k in other.get("required", [])
    ):
        return True
    # ``gen`` always writes a key that ``other`` forbids.
    if closed(other) and any(k not in other_props for k in gen_required):
        return True
    # A discriminator: a key ``gen`` always writes, with values ``other`` rejects.
    for key in gen_required & set(other_props):
        sub = gen_props.get(key)
        if isinstance(sub, dict):
            key_values = finite_values(sub)
            if key_values is not None and not any(validates(v, other_props[key]) for v in key_values):
                return True
    return False
