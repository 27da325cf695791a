"""Grammars that force a tool call: ``tool_choice: "required"`` or a named function, in each dialect's format.

Owns writing llama.cpp GBNF (root rule ``root``) whose every sentence is a call the dialect's parser reads back,
naming an offered function, with arguments valid against that function's JSON schema. The JSON of the arguments
comes from ``kaiyuan.chat.grammars.schema_to_gbnf_rules`` (one rule prefix per function); formats that write
each parameter as its own tag (GLM, Hunyuan, Qwen3-Coder, DeepSeek V3.2) get one value rule per parameter.
It knows nothing of engines or sampling: the grammar is applied to the answer, after any reasoning, by the caller.

Formats writing parameters as tags can only list the parameters the schema declares: required ones always, in
schema order, optional ones optionally. Such a string parameter is written raw, so its schema may only use
``enum``/``const``/``maxLength``/``minLength`` (other string keywords raise ``UnsupportedFeature``); raw strings
are capped at 256 characters unless ``maxLength`` says otherwise, and never contain ``<``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kaiyuan.errors import InvalidRequest, UnsupportedFeature

if TYPE_CHECKING:
    from kaiyuan.chat.dialects import Dialect

__all__ = ["MAX_PARALLEL_CALLS", "build_tool_call_grammar"]

#: at most this many calls in one answer when parallel calls are allowed
MAX_PARALLEL_CALLS = 8
_RAW_STRING_CAP = 256
_PARAMS_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "description",
        "title",
        "$schema",
        "$id",
        "$defs",
    }
    | {"definitions", "strict", "$comment", "examples", "default"}
)
_RAW_STRING_KEYWORDS = frozenset({"type", "description", "title", "enum", "const", "maxLength", "minLength"})
_RAW_STRING_KEYWORDS |= frozenset({"examples", "default", "$comment", "deprecated", "readOnly", "writeOnly"})


def lit(text: str) -> str:
    """A GBNF string literal for ``text``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t") + '"'


@dataclass
class _Function:
    index: int
    name: str
    parameters: dict[str, Any]


class _Grammar:
    """Collects rules; every function gets its own rule-name prefix ``f<i>-``."""

    def __init__(self) -> None:
        self.rules: list[str] = []

    def add(self, name: str, body: str) -> str:
        self.rules.append(f"{name} ::= {body}")
        return name

    def json_value(self, schema: Any, prefix: str) -> str:
        from kaiyuan.chat.grammars import schema_to_gbnf_rules

        root, text = schema_to_gbnf_rules(schema, rule_prefix=prefix)
        self.rules.append(text.strip())
        return root

    def text(self, root_body: str) -> str:
        return "\n".join([f"root ::= {root_body}", *self.rules]) + "\n"


def build_tool_call_grammar(
    dialect: Dialect,
    tools: list[dict[str, Any]],
    tool_choice: str | dict[str, Any],
    parallel: bool,
) -> str:
    """GBNF (root rule ``root``) admitting only tool calls in ``dialect``'s format.

    ``tool_choice`` is ``"required"`` (any offered function) or ``{"type": "function", "function": {"name": …}}``
    (that one). ``parallel`` allows up to :data:`MAX_PARALLEL_CALLS` calls, else exactly one. Raises
    ``InvalidRequest`` for a bad choice or tool list and ``UnsupportedFeature`` for a schema the format cannot
    enforce.
    """
    functions = _chosen_functions(tools, tool_choice)
    writer = _WRITERS.get(dialect.tool_parser)
    if writer is None:  # pragma: no cover - every registered parser has a writer (tested)
        raise UnsupportedFeature(f"no tool-call grammar for the {dialect.name!r} format", param="tool_choice")
    grammar = _Grammar()
    return writer(grammar, functions, parallel, dialect.variant)


def _chosen_functions(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any]) -> list[_Function]:
    functions: list[_Function] = []
    for i, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise InvalidRequest(f"tools[{i}] is not a function tool with a name", param="tools")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest(
                f"tools[{i}].function.parameters must be a JSON Schema object", param="tools"
            )
        functions.append(_Function(len(functions), function["name"], parameters))
    if not functions:
        raise InvalidRequest("tool_choice needs at least one tool in 'tools'", param="tool_choice")
    if tool_choice == "required":
        return functions
    if isinstance(tool_choice, dict):
        name = (
            (tool_choice.get("function") or {}).get("name") if tool_choice.get("type") == "function" else None
        )
        if not isinstance(name, str):
            raise InvalidRequest(
                "tool_choice must be 'required' or {'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
        chosen = [f for f in functions if f.name == name]
        if not chosen:
            known = ", ".join(f.name for f in functions)
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not in tools ({known})", param="tool_choice"
            )
        return [_Function(0, chosen[0].name, chosen[0].parameters)]
    raise InvalidRequest(
        f"a tool-call grammar is only built for tool_choice 'required' or a named function, not {tool_choice!r}",
        param="tool_choice",
    )


def _repeat(call: str, sep: str, parallel: bool) -> str:
    """``call`` once, or up to MAX_PARALLEL_CALLS times separated by ``sep``."""
    if not parallel:
        return call
    more = f"({sep} {call})" if sep else f"({call})"
    return f"{call} {more}{{0,{MAX_PARALLEL_CALLS - 1}}}"


def _alternatives(grammar: _Grammar, functions: list[_Function], one: Callable[[_Function], str]) -> str:
    return grammar.add("call", " | ".join(one(f) for f in functions))


# -- formats with JSON arguments --------------------------------------------------------------------------------


def _json_object_call(grammar: _Grammar, f: _Function, args_key: str) -> str:
    args = grammar.json_value(f.parameters, f"f{f.index}-")
    head = lit('{"name": ' + json.dumps(f.name, ensure_ascii=False) + f', "{args_key}": ')
    return grammar.add(f"call-{f.index}", f'{head} {args} "}}"')


def _hermes(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    def one(f: _Function) -> str:
        body = _json_object_call(grammar, f, "arguments")
        return grammar.add(f"block-{f.index}", f'"<tool_call>\\n" {body} "\\n</tool_call>"')

    return grammar.text(_repeat(_alternatives(grammar, functions, one), '"\\n"', parallel))


def _generic(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    call = _alternatives(grammar, functions, lambda f: _json_object_call(grammar, f, "arguments"))
    if not parallel:
        return grammar.text(call)
    return grammar.text(f'"{{\\"tool_calls\\": [" {_repeat(call, chr(34) + ", " + chr(34), True)} "]}}"')


def _llama3(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    call = _alternatives(grammar, functions, lambda f: _json_object_call(grammar, f, "parameters"))
    return grammar.text(_repeat(call, '"; "', parallel))


def _mistral(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    if variant == "v3":
        call = _alternatives(grammar, functions, lambda f: _json_object_call(grammar, f, "arguments"))
        return grammar.text(f'"[TOOL_CALLS][" {_repeat(call, chr(34) + ", " + chr(34), parallel)} "]"')

    def one(f: _Function) -> str:
        args = grammar.json_value(f.parameters, f"f{f.index}-")
        return grammar.add(f"call-{f.index}", f'"[TOOL_CALLS]" {lit(f.name)} "[ARGS]" {args}')

    return grammar.text(_repeat(_alternatives(grammar, functions, one), "", parallel))


def _section(begin: str, end: str, sep: str = "") -> Callable[..., str]:
    """A writer for formats that wrap their calls in one section (DeepSeek, Kimi)."""

    def write(
        grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str, *, call_of: Any
    ) -> str:
        call = _alternatives(grammar, functions, lambda f: call_of(grammar, f))
        return grammar.text(f"{lit(begin)} {_repeat(call, lit(sep) if sep else '', parallel)} {lit(end)}")

    return write


def _deepseek_r1_call(grammar: _Grammar, f: _Function) -> str:
    args = grammar.json_value(f.parameters, f"f{f.index}-")
    head = lit(f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{f.name}\n```json\n")
    return grammar.add(f"call-{f.index}", f"{head} {args} {lit(chr(10) + '```<｜tool▁call▁end｜>')}")


def _deepseek_v31_call(grammar: _Grammar, f: _Function) -> str:
    args = grammar.json_value(f.parameters, f"f{f.index}-")
    head = lit(f"<｜tool▁call▁begin｜>{f.name}<｜tool▁sep｜>")
    return grammar.add(f"call-{f.index}", f"{head} {args} {lit('<｜tool▁call▁end｜>')}")


def _kimi_call(grammar: _Grammar, f: _Function) -> str:
    args = grammar.json_value(f.parameters, f"f{f.index}-")
    head = lit(f"<|tool_call_begin|>functions.{f.name}:")
    return grammar.add(
        f"call-{f.index}",
        f"{head} [0-9] {lit('<|tool_call_argument_begin|>')} {args} {lit('<|tool_call_end|>')}",
    )


def _deepseek_r1(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    write = _section("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "\n")
    return write(grammar, functions, parallel, variant, call_of=_deepseek_r1_call)


def _deepseek_v31(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    write = _section("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")
    return write(grammar, functions, parallel, variant, call_of=_deepseek_v31_call)


def _kimi(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    write = _section("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>")
    return write(grammar, functions, parallel, variant, call_of=_kimi_call)


# -- formats writing each parameter as tags ---------------------------------------------------------------------


@dataclass
class _Tags:
    """How one key/value format writes a parameter: ``param(name, value_rule, raw)`` → GBNF sequence."""

    param: Callable[[str, str, bool], str]
    head: Callable[[str], str]
    tail: str


def _params(grammar: _Grammar, f: _Function, tags: _Tags) -> str:
    """The parameters of ``f`` as tags: required ones always, optional ones optionally, in schema order."""
    schema = f.parameters
    extra = sorted(set(schema) - _PARAMS_KEYWORDS)
    if schema.get("type", "object") != "object" or extra:
        what = extra[0] if extra else f"type {schema.get('type')!r}"
        raise UnsupportedFeature(
            f"function {f.name!r}: its parameters schema uses {what}, which this model's tool-call format "
            "(one tag per parameter) cannot enforce; describe the parameters as a plain object",
            param="tools",
        )
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    missing = sorted(required - set(properties))
    if missing:
        raise UnsupportedFeature(
            f"function {f.name!r}: required parameter {missing[0]!r} has no schema in 'properties'",
            param="tools",
        )
    defs: dict[str, Any] = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    parts: list[str] = []
    for j, (key, prop) in enumerate(properties.items()):
        value, raw = _param_value(grammar, f, j, key, prop, defs)
        item = tags.param(key, value, raw)
        parts.append(item if key in required else f"({item})?")
    body = " ".join([tags.head(f.name), *parts, tags.tail])
    return grammar.add(f"call-{f.index}", body)


def _param_value(
    grammar: _Grammar, f: _Function, j: int, key: str, prop: Any, defs: dict[str, Any]
) -> tuple[str, bool]:
    """The value rule of one parameter and whether it is raw text (a string) rather than JSON."""
    prefix = f"f{f.index}-p{j}-"
    if isinstance(prop, dict) and _is_raw_string(prop):
        return _raw_string(grammar, prefix, f.name, key, prop), True
    schema = {**prop, **defs} if isinstance(prop, dict) and defs else prop
    return grammar.json_value(schema, prefix), False


def _is_raw_string(prop: dict[str, Any]) -> bool:
    if prop.get("type") == "string":
        return True
    values = prop.get("enum", [prop["const"]] if "const" in prop else None)
    return (
        "type" not in prop
        and isinstance(values, list)
        and bool(values)
        and all(isinstance(v, str) for v in values)
    )


def _raw_string(grammar: _Grammar, prefix: str, function: str, key: str, prop: dict[str, Any]) -> str:
    unsupported = sorted(set(prop) - _RAW_STRING_KEYWORDS)
    if unsupported:
        raise UnsupportedFeature(
            f"function {function!r}, parameter {key!r}: the keyword {unsupported[0]!r} cannot be enforced on a "
            "string this model's tool-call format writes as raw text",
            param="tools",
        )
    values = prop.get("enum", [prop["const"]] if "const" in prop else None)
    if values is not None:
        strings = [v for v in values if isinstance(v, str) and "<" not in v]
        if not strings:
            raise UnsupportedFeature(
                f"function {function!r}, parameter {key!r}: no enum value can be written as raw text",
                param="tools",
            )
        return grammar.add(f"{prefix}raw", " | ".join(lit(v) for v in strings))
    low = int(prop.get("minLength", 0))
    high = int(prop.get("maxLength", max(_RAW_STRING_CAP, low)))
    if high < low:
        raise InvalidRequest(
            f"function {function!r}, parameter {key!r}: maxLength < minLength", param="tools"
        )
    return grammar.add(f"{prefix}raw", f"[^<]{{{low},{high}}}")


def _glm(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    nl = "" if variant == "compact" else "\n"
    tags = _Tags(
        param=lambda k, v, raw: (
            f'{lit(nl + "<arg_key>" + k + "</arg_key>" + nl + "<arg_value>")} {v} "</arg_value>"'
        ),
        head=lambda name: lit("<tool_call>" + name),
        tail=lit(nl + "</tool_call>"),
    )
    call = _alternatives(grammar, functions, lambda f: _params(grammar, f, tags))
    return grammar.text(_repeat(call, lit("\n") if nl else "", parallel))


_HY = ":opensource"


def _hunyuan(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    tags = _Tags(
        param=lambda k, v, raw: (
            f"{lit(f'<arg_key{_HY}>{k}</arg_key{_HY}>' + chr(10) + f'<arg_value{_HY}>')} {v} "
            f"{lit(f'</arg_value{_HY}>' + chr(10))}"
        ),
        head=lambda name: lit(f"<tool_call{_HY}>{name}<tool_sep{_HY}>\n"),
        tail=lit(f"</tool_call{_HY}>\n"),
    )
    call = _alternatives(grammar, functions, lambda f: _params(grammar, f, tags))
    return grammar.text(
        f"{lit(f'<tool_calls{_HY}>' + chr(10))} {_repeat(call, '', parallel)} {lit(f'</tool_calls{_HY}>')}"
    )


def _qwen3_coder(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    tags = _Tags(
        param=lambda k, v, raw: (
            f"{lit(f'<parameter={k}>' + chr(10))} {v} {lit(chr(10) + '</parameter>' + chr(10))}"
        ),
        head=lambda name: lit(f"<tool_call>\n<function={name}>\n"),
        tail=lit("</function>\n</tool_call>"),
    )
    call = _alternatives(grammar, functions, lambda f: _params(grammar, f, tags))
    return grammar.text(_repeat(call, lit("\n"), parallel))


_DSML = "｜DSML｜"


def _deepseek_v32(grammar: _Grammar, functions: list[_Function], parallel: bool, variant: str) -> str:
    def param(k: str, v: str, raw: bool) -> str:
        flag = "true" if raw else "false"
        return (
            f"{lit(f'<{_DSML}parameter name={json.dumps(k)} string={chr(34)}{flag}{chr(34)}>')} {v} "
            + lit(f"</{_DSML}parameter>\n")
        )

    tags = _Tags(
        param=param,
        head=lambda name: lit(f"<{_DSML}invoke name={json.dumps(name, ensure_ascii=False)}>\n"),
        tail=lit(f"</{_DSML}invoke>\n"),
    )
    call = _alternatives(grammar, functions, lambda f: _params(grammar, f, tags))
    return grammar.text(
        f"{lit(f'<{_DSML}function_calls>' + chr(10))} {_repeat(call, '', parallel)} {lit(f'</{_DSML}function_calls>')}"
    )


_WRITERS: dict[str, Callable[[_Grammar, list[_Function], bool, str], str]] = {
    "hermes": _hermes,
    "generic": _generic,
    "llama3": _llama3,
    "mistral": _mistral,
    "deepseek_r1": _deepseek_r1,
    "deepseek_v31": _deepseek_v31,
    "deepseek_v32": _deepseek_v32,
    "kimi_k2": _kimi,
    "glm45": _glm,
    "hunyuan": _hunyuan,
    "qwen3_coder": _qwen3_coder,
}
