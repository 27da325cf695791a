"""Which JSON Schema keywords the compiler reads, which it may ignore, and the error for the rest.

Owns: the keyword tables (assertions handled, annotations ignored, assertions refused) across drafts 4 to
2020-12, the JSON-pointer spelling of schema paths, and the ``UnsupportedFeature`` message.
Must not know: grammar trees.
"""

from __future__ import annotations

from kaiyuan.errors import InvalidRequest, UnsupportedFeature

PARAM = "response_format"

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "example",
        "$comment",
        "$schema",
        "$id",
        "id",
        "$anchor",
        "$vocabulary",
        "$defs",
        "definitions",
        "readOnly",
        "writeOnly",
        "deprecated",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
        "discriminator",
        "xml",
        "nullable",
        "externalDocs",
    }
)
"""Keywords that never make an instance invalid: ignored."""

HANDLED = frozenset(
    {
        "type",
        "enum",
        "const",
        "$ref",
        "allOf",
        "anyOf",
        "oneOf",
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "unevaluatedProperties",
        "items",
        "prefixItems",
        "additionalItems",
        "unevaluatedItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    }
)
"""Keywords the compiler enforces (some only in common forms; it raises for the others)."""

REFUSED = {
    "not": "negation cannot be expressed as a grammar",
    "if": "conditional schemas (if/then/else) are not enforced",
    "then": "conditional schemas (if/then/else) are not enforced",
    "else": "conditional schemas (if/then/else) are not enforced",
    "contains": "'contains' cannot be enforced on arbitrary arrays",
    "minContains": "'contains' cannot be enforced on arbitrary arrays",
    "maxContains": "'contains' cannot be enforced on arbitrary arrays",
    "dependentRequired": "property dependencies are not enforced",
    "dependentSchemas": "property dependencies are not enforced",
    "dependencies": "property dependencies are not enforced",
    "patternProperties": "property-name patterns are not enforced; list the properties or use "
    "additionalProperties with propertyNames",
    "$dynamicRef": "dynamic references are not supported",
    "$dynamicAnchor": "dynamic references are not supported",
    "$recursiveRef": "dynamic references are not supported",
    "$recursiveAnchor": "dynamic references are not supported",
}
"""Assertions kaiyuan cannot enforce, with the reason given to the user."""

TYPE_KEYWORDS = {
    "object": (
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
        "propertyNames",
    ),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
}
"""Keywords that only apply to one type: a schema without ``type`` that uses them is generated as that type."""

JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def pointer(path: tuple[str, ...]) -> str:
    """``("properties", "a/b")`` -> ``#/properties/a~1b``."""
    return "#" + "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in path)


def unsupported(keyword: str, path: tuple[str, ...], why: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"JSON Schema keyword '{keyword}' at {pointer(path)} cannot be enforced: {why}. "
        "Remove or simplify it; kaiyuan does not answer with unconstrained output instead.",
        param=PARAM,
    )


def invalid(path: tuple[str, ...], why: str) -> InvalidRequest:
    return InvalidRequest(f"invalid JSON Schema at {pointer(path)}: {why}", param=PARAM)
