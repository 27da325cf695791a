"""Structured output: JSON Schema and OpenAI ``response_format`` compiled to llama.cpp GBNF grammars.

Every output a grammar allows parses as JSON and validates against the schema; what kaiyuan cannot enforce
raises ``kaiyuan.errors.UnsupportedFeature`` naming the keyword and its JSON path. With a token budget the
grammar also guarantees the JSON closes within it. See docs/structured-output.md.
"""

from kaiyuan.chat.grammars._api import (
    json_object_grammar,
    json_schema_grammar,
    response_format_grammar,
    schema_to_gbnf_rules,
)

__all__ = [
    "json_object_grammar",
    "json_schema_grammar",
    "response_format_grammar",
    "schema_to_gbnf_rules",
]
