"""Compiling a JSON Schema into a grammar tree whose every output parses and validates against the schema.

Owns: the walk over a schema (``$ref``/``$defs`` with recursion, ``allOf`` merging, ``anyOf``/``oneOf``,
``enum``/``const``, types and their keywords), the JSON punctuation and whitespace, and the ``Limits`` that bound
free-length parts. Generation may be *narrower* than the schema (declared properties only, whole-number bounds,
format subsets) but never wider; whatever cannot be enforced raises ``UnsupportedFeature`` with its path.
Must not know: GBNF spelling (``_gbnf``), how limits are chosen from a token budget (``_budget``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

from kaiyuan.chat.grammars import _charset as cs
from kaiyuan.chat.grammars import _exclusive, _formats, _numbers, _regex, _strings
from kaiyuan.chat.grammars import _ir as ir
from kaiyuan.chat.grammars._gbnf import RuleSet
from kaiyuan.chat.grammars._keywords import (
    ANNOTATIONS,
    JSON_TYPES,
    REFUSED,
    TYPE_KEYWORDS,
    invalid,
    pointer,
    unsupported,
)
from kaiyuan.chat.grammars._merge import all_of_parts, canonical, merge_all, normalize_bounds
from kaiyuan.errors import InvalidRequest

Schema = dict[str, Any]
Path = tuple[str, ...]


@dataclass(frozen=True)
class Limits:
    """Bounds on the parts of a JSON document that the schema leaves open (None: only the schema's own)."""

    string: int | None = None  # max characters of a string without maxLength
    items: int | None = None  # max items of an array without maxItems (and entries of an open map)
    pattern: int | None = None  # max repetitions of a regex quantifier beyond its minimum
    int_digits: int = _numbers.MAX_INT_DIGITS  # digits of an integer part without bounds
    fraction_digits: int = _numbers.MAX_FRACTION_DIGITS  # digits after the decimal point
    exponent: bool = True  # whether unbounded numbers may carry an exponent
    depth: int | None = None  # how often a recursive $ref (or free-form nesting) may be entered
    max_optional: int | None = None  # optional properties one object may write (0: required ones only)
    compact: bool = False  # no indentation or escapes (budgeted output) instead of bounded indentation
    spaces: bool = True  # with ``compact``: one optional space after ':' and ','


_MAX_MINIMUM = 100_000  # minLength/minItems/minProperties beyond this cannot be met by a generated answer
_FREE_DEPTH = 2  # nesting of free-form JSON ({} / true schemas) under a budget, when ``depth`` is not smaller


class Compiler:
    """One compilation of one schema into ``rules`` (a fresh ``RuleSet`` per compilation)."""

    def __init__(self, root: Any, rules: RuleSet, limits: Limits, *, strict: bool = False) -> None:
        if not isinstance(root, dict | bool):
            raise invalid((), "a schema must be a JSON object or a boolean")
        self.root = root
        self.rules = rules
        self.limits = limits
        self.strict = strict
        self.ref_rules: dict[object, str] = {}
        self.ref_stack: list[str] = []
        self.level = 0  # recursion levels taken on the current path (entries into a ``cyclic`` reference)
        self._cyclic: frozenset[str] | None = None
        self.shared: dict[str, ir.Ref] = {}
        self.string_rules: dict[tuple[str, str, int | None, int, int | None], ir.Ref] = {}
        self._validator_cache: object | None = None

    # -- entry -----------------------------------------------------------------------------------------------
    def compile_root(self, name_hint: str = "root") -> str:
        name = self.rules.new_name(name_hint)
        if self.limits.depth is None:
            self.ref_rules[("#", ())] = name
        else:
            self.level = 1 if "#" in self.cyclic() else 0
            self.ref_rules[("#", 0)] = name
        self.ref_stack.append("#")
        body = self.compile(self.root, ())
        self.ref_stack.pop()
        self.rules.define(name, body)
        return name

    # -- shared pieces ---------------------------------------------------------------------------------------
    def _shared(self, hint: str, build: Any) -> ir.Ref:
        ref = self.shared.get(hint)
        if ref is None:
            name = self.rules.new_name(hint)
            ref = ir.Ref(name)
            self.shared[hint] = ref
            self.rules.define(name, build())
        return ref

    def sep(self) -> ir.Node:
        """Whitespace after ':' and ','."""
        if self.limits.compact:
            return ir.opt(ir.lit(" ")) if self.limits.spaces else ir.EMPTY
        return self._shared("ws", self._pretty_ws)

    def pad(self) -> ir.Node:
        """Whitespace after '{'/'[' and before '}'/']'."""
        if self.limits.compact:
            return ir.EMPTY
        return self._shared("ws", self._pretty_ws)

    @staticmethod
    def _pretty_ws() -> ir.Node:
        # Bounded: an unbounded whitespace run is the classic way a small model loops under a grammar.
        return ir.opt(ir.alt(ir.lit(" "), ir.seq(ir.lit("\n"), ir.rep(ir.Chars(cs.of_chars(" \t")), 0, 20))))

    def string_char(self) -> ir.Node:
        """One character of a free string, as written in JSON."""
        if self.limits.compact:
            # Under a budget every character costs one output character: no escapes.
            return self._shared("char", lambda: ir.Chars(cs.subtract(cs.complement(()), cs.NEEDS_ESCAPE)))
        return self._shared(
            "char",
            lambda: ir.alt(
                ir.Chars(cs.subtract(cs.complement(()), cs.NEEDS_ESCAPE)),
                ir.seq(ir.lit("\\"), ir.Chars(cs.of_chars('"\\/bfnrt'))),
            ),
        )

    def free_string(self, lo: int = 0, hi: int | None = None) -> ir.Node:
        if self.limits.string is not None:
            hi = max(lo, self.limits.string if hi is None else min(hi, self.limits.string))
        return ir.seq(ir.lit('"'), ir.rep(self.string_char(), lo, hi), ir.lit('"'))

    def any_value(self, depth: int | None = None) -> ir.Node:
        """Any JSON value (bounded nesting under a budget)."""
        if self.limits.depth is None:
            return self._shared("value", lambda: self._any_value_body(None))
        if depth is None:
            depth = min(self.limits.depth, _FREE_DEPTH)
        return self._shared(f"value-{depth}", lambda: self._any_value_body(depth))

    def _any_value_body(self, depth: int | None) -> ir.Node:
        scalars = [
            self.free_string(),
            self._number_node(integer=False),
            ir.lit("true"),
            ir.lit("false"),
            ir.lit("null"),
        ]
        if depth == 0:
            return ir.alt(*scalars)
        return ir.alt(self.any_object(depth), self.any_array(depth), *scalars)

    def any_object(self, depth: int | None = None) -> ir.Node:
        inner = None if depth is None else depth - 1
        entry = ir.seq(self.free_string(), ir.lit(":"), self.sep(), self._any_inner(inner))
        return self._braced("{", "}", self._list_of(entry, 0, self.limits.items))

    def any_array(self, depth: int | None = None) -> ir.Node:
        inner = None if depth is None else depth - 1
        return self._braced("[", "]", self._list_of(self._any_inner(inner), 0, self.limits.items))

    def _any_inner(self, depth: int | None) -> ir.Node:
        if depth is None and self.limits.depth is None:
            return self._shared("value", lambda: self._any_value_body(None))
        return self.any_value(depth if depth is not None else 0)

    def _braced(self, open_: str, close: str, body: ir.Node) -> ir.Node:
        return ir.seq(ir.lit(open_), self.pad(), body, self.pad(), ir.lit(close))

    def _list_of(self, item: ir.Node, lo: int, hi: int | None) -> ir.Node:
        """``lo``..``hi`` comma-separated items."""
        if hi is not None and hi == 0:
            return ir.EMPTY
        rest = ir.rep(ir.seq(ir.lit(","), self.sep(), item), max(lo - 1, 0), None if hi is None else hi - 1)
        body = ir.seq(item, rest)
        return body if lo > 0 else ir.opt(body)

    # -- schemas ---------------------------------------------------------------------------------------------
    def compile(self, schema: Any, path: Path) -> ir.Node:
        if schema is True:
            return self.any_value()
        if schema is False:
            return ir.NEVER
        if not isinstance(schema, dict):
            raise invalid(path, "a schema must be a JSON object or a boolean")
        self._check_keywords(schema, path)
        schema = normalize_bounds(schema)
        if "$ref" in schema:
            return self._compile_ref(schema, path)
        if "allOf" in schema:
            merged = merge_all(all_of_parts(schema, path), self.inline_ref)
            return self.compile(merged, (*path, "allOf"))
        if "anyOf" in schema or "oneOf" in schema:
            return self._compile_choice(schema, path)
        if "const" in schema:
            return self._compile_values([schema["const"]], schema, path, "const")
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise invalid((*path, "enum"), "'enum' must be a non-empty array")
            return self._compile_values(schema["enum"], schema, path, "enum")
        return ir.alt(*(self._compile_type(t, schema, path) for t in self.types_of(schema)))

    def _check_keywords(self, schema: Schema, path: Path) -> None:
        for key in schema:
            if key in REFUSED:
                raise unsupported(key, path, REFUSED[key])
        if schema.get("unevaluatedProperties") not in (None, False):
            raise unsupported(
                "unevaluatedProperties", path, "only 'unevaluatedProperties: false' is supported"
            )
        if schema.get("unevaluatedItems") not in (None, False):
            raise unsupported("unevaluatedItems", path, "only 'unevaluatedItems: false' is supported")

    def types_of(self, schema: Schema) -> list[str]:
        """The JSON types to generate for a schema without enum/const."""
        declared = schema.get("type")
        if declared is None:
            inferred = [t for t, keys in TYPE_KEYWORDS.items() if any(k in schema for k in keys)]
            types = inferred or list(JSON_TYPES)
            if not inferred:
                return ["any"]
        else:
            types = [declared] if isinstance(declared, str) else list(declared)
            for t in types:
                if t not in JSON_TYPES:
                    raise invalid(("type",), f"unknown type {t!r}")
        if "number" in types and "integer" in types:
            types.remove("integer")
        return types

    def inferred_types(self, schema: Schema) -> set[str]:
        types = set(self.types_of(schema))
        return set(JSON_TYPES) if "any" in types else types

    def _compile_type(self, t: str, schema: Schema, path: Path) -> ir.Node:
        if t == "any":
            return self.any_value()
        if t == "null":
            return ir.lit("null")
        if t == "boolean":
            return ir.alt(ir.lit("true"), ir.lit("false"))
        if t == "string":
            return self._compile_string(schema, path)
        if t in ("number", "integer"):
            return self._compile_number(schema, path, integer=t == "integer")
        if t == "array":
            return self._compile_array(schema, path)
        return self._compile_object(schema, path)

    # -- references ------------------------------------------------------------------------------------------
    def resolve_pointer(self, ref: str, path: Path) -> tuple[Any, Path]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise unsupported("$ref", path, f"only local references ('#/...') are supported, not {ref!r}")
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            raise unsupported("$ref", path, f"anchor references ({ref!r}) are not supported")
        node: Any = self.root
        where: list[str] = []
        for raw in fragment.split("/")[1:]:
            part = raw.replace("~1", "/").replace("~0", "~")
            where.append(part)
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise invalid(path, f"$ref {ref!r} points to nothing")
        return node, tuple(where)

    def inline_ref(self, schema: Schema, path: Path) -> tuple[Schema, Path]:
        """Follow ``$ref`` chains at the top of ``schema`` (for merging), keeping sibling keywords."""
        seen: set[str] = set()
        while isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen or ref in self.ref_stack:
                raise unsupported("$ref", path, "a recursive reference inside allOf cannot be merged")
            seen.add(ref)
            target, where = self.resolve_pointer(ref, path)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if target is False:
                return {"not": {}}, where  # unsatisfiable; refused by the caller's keyword check
            target = {} if target is True else target
            if siblings:
                merged = merge_all([(target, where), (siblings, path)], self.inline_ref)
                schema = merged if isinstance(merged, dict) else {"enum": []}
            else:
                schema = target
            path = where
        return schema, path

    def _compile_ref(self, schema: Schema, path: Path) -> ir.Node:
        ref = schema["$ref"]
        siblings = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
        if siblings:
            merged = merge_all([({"$ref": ref}, path), (siblings, path)], self.inline_ref)
            return self.compile(merged, path)
        target, where = self.resolve_pointer(ref, path)
        canonical_ref = pointer(where)
        inner = self.level
        if self.limits.depth is None:
            key: object = (canonical_ref, ())
        else:
            # Unrolled: one rule per (reference, recursion level), so the grammar grows with the number of
            # references times the depth, never with the number of paths through them.
            key = (canonical_ref, self.level)
            if canonical_ref in self.cyclic():
                if self.level >= self.limits.depth:
                    return ir.NEVER  # recursion unrolled as deep as the budget allows
                inner += 1
        name = self.ref_rules.get(key)
        if name is None:
            name = self.rules.new_name("ref-" + (where[-1] if where else "root"))
            self.ref_rules[key] = name
            self.ref_stack.append(canonical_ref)
            outer, self.level = self.level, inner
            try:
                body = self.compile(target, where)
            finally:
                self.level = outer
                self.ref_stack.pop()
            self.rules.define(name, body)
        return ir.Ref(name)

    def cyclic(self) -> frozenset[str]:
        """The references that recursion passes through: the targets of back edges of a depth-first walk of
        the reference graph from the root. Every cycle of references enters one of them, so counting entries
        into these alone bounds any recursion."""
        if self._cyclic is None:
            self._cyclic = frozenset(_back_edge_targets(self._references))
        return self._cyclic

    def _references(self, ref: str) -> list[str]:
        """The canonical references a schema part makes (its definitions excluded; unresolvable ones left out)."""
        try:
            node = self.root if ref == "#" else self.resolve_pointer(ref, ())[0]
        except InvalidRequest:  # reported where the reference is compiled
            return []
        found: list[str] = []
        stack: list[Any] = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                target = item.get("$ref")
                if isinstance(target, str):
                    with contextlib.suppress(InvalidRequest):
                        found.append(pointer(self.resolve_pointer(target, ())[1]))
                stack.extend(v for k, v in item.items() if k not in _DEFINITIONS)
            elif isinstance(item, list):
                stack.extend(item)
        return found

    # -- anyOf / oneOf ---------------------------------------------------------------------------------------
    def _compile_choice(self, schema: Schema, path: Path) -> ir.Node:
        base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        for key in ("anyOf", "oneOf"):
            if key in schema and (not isinstance(schema[key], list) or not schema[key]):
                raise invalid((*path, key), f"'{key}' must be a non-empty array")
        if "oneOf" in schema:
            self._check_exclusive(schema["oneOf"], base, (*path, "oneOf"))
        branches: list[ir.Node] = []
        combos: list[list[tuple[Any, Path]]] = [[]]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                choices = [(b, (*path, key, str(i))) for i, b in enumerate(schema[key])]
                combos = [[*c, b] for c in combos for b in choices]
        for combo in combos:
            where = combo[-1][1]
            if not base and len(combo) == 1:
                branches.append(self.compile(combo[0][0], where))
            else:
                merged = merge_all([(base, path), *combo], self.inline_ref)
                branches.append(self.compile(merged, where))
        return ir.alt(*branches)

    def _check_exclusive(self, branches: list[Any], base: Schema, path: Path) -> None:
        resolved: list[Schema] = []
        for index, branch in enumerate(branches):
            merged = merge_all([(base, path[:-1]), (branch, (*path, str(index)))], self.inline_ref)
            resolved.append(merged if isinstance(merged, dict) else {"enum": []})
        for i, gen in enumerate(resolved):
            for j, other in enumerate(resolved):
                if i != j and not _exclusive.excludes(
                    gen,
                    other,
                    validates=self.validates,
                    inferred=self.inferred_types,
                    generates_extra_keys=self._generates_extra_keys,
                    closed=self._closed,
                ):
                    raise unsupported(
                        "oneOf",
                        (*path, str(i)),
                        f"kaiyuan cannot prove that a value of branch {i} never also matches branch {j} "
                        "(oneOf needs exactly one match); use anyOf, or give the branches a distinguishing "
                        "'const' property or different types",
                    )

    def _generates_extra_keys(self, schema: Schema) -> bool:
        extra = self._extra_schema(schema)
        return extra is not None

    def _closed(self, schema: Schema) -> bool:
        return schema.get("additionalProperties") is False or schema.get("unevaluatedProperties") is False

    # -- enum / const ----------------------------------------------------------------------------------------
    def validates(self, value: object, schema: object) -> bool:
        """Whether ``value`` is valid against ``schema`` (a part of the root schema; refs resolve in the root)."""
        import jsonschema
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        if self._validator_cache is None:
            root = self.root if isinstance(self.root, dict) else {}
            resource = Resource.from_contents(root, default_specification=DRAFT202012)
            registry = Registry().with_resource(_ROOT_URI, resource)
            cls = jsonschema.validators.validator_for(root, default=jsonschema.Draft202012Validator)
            self._validator_cache = (cls, registry)
        cls, registry = self._validator_cache  # type: ignore[misc]
        try:
            return bool(cls(_absolute_refs(schema), registry=registry).is_valid(value))
        except Exception:  # a malformed part or an unresolvable pointer: not provably valid
            return False

    def _compile_values(self, values: list[Any], schema: Schema, path: Path, keyword: str) -> ir.Node:
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const") and k not in ANNOTATIONS}
        if rest:
            values = [v for v in values if self.validates(v, rest)]
            if not values:
                raise invalid((*path, keyword), f"no '{keyword}' value satisfies the schema's other keywords")
        if keyword == "enum" and "const" in schema:
            values = [v for v in values if canonical(v) == canonical(schema["const"])]
        return ir.alt(*(ir.lit(self._dump(v)) for v in values))

    @staticmethod
    def _dump(value: object) -> str:
        import json

        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    # -- strings ---------------------------------------------------------------------------------------------
    def _int_keyword(self, schema: Schema, key: str, path: Path) -> int | None:
        value = schema.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or int(value) != value:
            raise invalid((*path, key), f"'{key}' must be a non-negative integer")
        if key.startswith("min") and value > _MAX_MINIMUM:
            raise unsupported(
                key, path, f"a minimum above {_MAX_MINIMUM} cannot be generated within any answer"
            )
        return int(value)

    def _compile_string(self, schema: Schema, path: Path) -> ir.Node:
        lo = self._int_keyword(schema, "minLength", path) or 0
        hi = self._int_keyword(schema, "maxLength", path)
        if hi is not None and hi < lo:
            raise invalid(path, "maxLength is smaller than minLength")
        pattern = schema.get("pattern")
        fmt = schema.get("format")
        if pattern is not None and fmt is not None and fmt in _formats.FORMATS:
            raise unsupported("pattern", path, "'pattern' together with 'format' is not supported")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise invalid((*path, "pattern"), "'pattern' must be a string")
            return self._string_rule("pattern", pattern, self.limits.pattern, lo, hi, path)
        if fmt is not None:
            if not isinstance(fmt, str) or fmt not in _formats.FORMATS:
                raise unsupported(
                    "format",
                    path,
                    f"format {fmt!r} is not enforced (supported: {', '.join(sorted(_formats.FORMATS))})",
                )
            cap = self.limits.string if self.limits.string is not None else 63
            return self._string_rule("format", fmt, max(cap, 1), lo, hi, path)
        return self.free_string(lo, hi)

    def _string_rule(
        self, kind: str, source: str, cap: int | None, lo: int, hi: int | None, path: Path
    ) -> ir.Node:
        """A JSON string whose value matches a pattern or a format (one shared rule per distinct string type)."""
        key = (kind, source, cap, lo, hi)
        ref = self.string_rules.get(key)
        if ref is None:
            try:
                body = _strings.string_body(kind, source, cap, lo, hi)
            except _regex.RegexUnsupported as exc:
                raise unsupported("pattern", path, f"{exc}") from exc
            except _regex.RegexSyntaxError as exc:
                raise invalid((*path, "pattern"), str(exc)) from exc
            if body is None:
                raise unsupported(
                    kind,
                    path,
                    f"'{kind}' together with minLength/maxLength is only supported when the {kind} can be "
                    "shortened to fit (or lengthened by one repeated character class)",
                )
            ref = self.rules.add(f"{kind}-{source}" if kind == "format" else "pattern", body)
            self.string_rules[key] = ref
        return ref

    # -- numbers ---------------------------------------------------------------------------------------------
    def _number_node(self, *, integer: bool) -> ir.Node:
        lim = self.limits
        if integer:
            return self._shared(
                "integer", lambda: _numbers.integer_range(None, None, max_digits=lim.int_digits)
            )
        return self._shared(
            "number",
            lambda: _numbers.unbounded_number(
                int_digits=lim.int_digits, fraction_digits=lim.fraction_digits, exponent=lim.exponent
            ),
        )

    def _compile_number(self, schema: Schema, path: Path, *, integer: bool) -> ir.Node:
        def bound(key: str) -> Fraction | None:
            value = schema.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid((*path, key), f"'{key}' must be a number")
            return Fraction(value)

        multiple = schema.get("multipleOf")
        if multiple is not None:
            if isinstance(multiple, bool) or not isinstance(multiple, int | float) or multiple <= 0:
                raise invalid((*path, "multipleOf"), "'multipleOf' must be a positive number")
            if Fraction(multiple) != 1 or not integer:
                if Fraction(multiple).denominator == 1 and integer is False and Fraction(multiple) == 1:
                    integer = True
                else:
                    raise unsupported("multipleOf", path, "only 'multipleOf: 1' is enforced")
        lo, hi = bound("minimum"), bound("maximum")
        xlo, xhi = bound("exclusiveMinimum"), bound("exclusiveMaximum")
        lo_excl = False
        if xlo is not None and (lo is None or xlo >= lo):
            lo, lo_excl = xlo, True
        hi_excl = False
        if xhi is not None and (hi is None or xhi <= hi):
            hi, hi_excl = xhi, True
        if lo is None and hi is None:
            return self._number_node(integer=integer)
        key = ("integer" if integer else "number", f"{lo}/{lo_excl}/{hi}/{hi_excl}", None, 0, None)
        if key in self.string_rules:
            return self.string_rules[key]
        node = _numbers.bounded_number(
            lo,
            lo_excl,
            hi,
            hi_excl,
            int_digits=self.limits.int_digits,
            fraction_digits=0 if integer else self.limits.fraction_digits,
        )
        if node is None:
            raise unsupported(
                "minimum",
                path,
                "no whole number fits these bounds; kaiyuan enforces number bounds at whole-number precision",
            )
        ref = self.rules.add("integer-range" if integer else "number-range", node)
        self.string_rules[key] = ref
        return ref

    # -- arrays ----------------------------------------------------------------------------------------------
    def _compile_array(self, schema: Schema, path: Path) -> ir.Node:
        lo = self._int_keyword(schema, "minItems", path) or 0
        hi = self._int_keyword(schema, "maxItems", path)
        if hi is not None and hi < lo:
            raise invalid(path, "maxItems is smaller than minItems")
        items = schema.get("items", True)
        prefix: list[Any] = []
        if isinstance(items, list):  # drafts 4-2019: tuple form
            prefix, items = items, schema.get("additionalItems", True)
        elif "prefixItems" in schema:
            prefix = schema["prefixItems"]
            if not isinstance(prefix, list):
                raise invalid((*path, "prefixItems"), "'prefixItems' must be an array")
        if "items" not in schema and "prefixItems" in schema and schema.get("unevaluatedItems") is False:
            items = False
        if items is False:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
            if lo > hi:
                raise invalid(path, "minItems needs more items than the schema allows")
        if schema.get("uniqueItems") is True:
            if self._enum_items(items) is not None and not prefix:
                return self._unique_enum_array(self._enum_items(items) or [], lo, hi, path)
            if lo > 1:
                raise unsupported(
                    "uniqueItems",
                    path,
                    "unique items are only enforced for enum items or arrays of at most one item",
                )
            hi = 1 if hi is None else min(hi, 1)  # at most one item: trivially unique
        if hi is None and self.limits.items is not None:
            hi = max(lo, self.limits.items)
        slots = [self.compile(p, (*path, "prefixItems", str(i))) for i, p in enumerate(prefix)]
        rest = self.compile(items, (*path, "items")) if items is not False else ir.NEVER
        return self._braced("[", "]", self._array_body(slots, rest, lo, hi))

    def _array_body(self, slots: list[ir.Node], rest: ir.Node, lo: int, hi: int | None) -> ir.Node:
        comma = ir.seq(ir.lit(","), self.sep())
        k = len(slots)
        # Items after the prefix, each preceded by a comma.
        tail_rest = ir.rep(ir.seq(comma, rest), max(lo - k, 0), None if hi is None else max(hi - k, 0))
        tail = tail_rest
        for i in range(k - 1, 0, -1):  # prefix item i (i >= 1), with its comma
            if hi is not None and i >= hi:
                continue
            step = ir.seq(comma, slots[i], tail)
            tail = step if i < lo else ir.opt(step)
        if k:
            first = ir.seq(slots[0], tail) if hi is None or hi >= 1 else ir.NEVER
        else:
            if hi is not None and hi == 0:
                return ir.EMPTY
            first = ir.seq(rest, ir.rep(ir.seq(comma, rest), max(lo - 1, 0), None if hi is None else hi - 1))
        if hi == 0:
            return ir.EMPTY
        return first if lo >= 1 else ir.opt(first)

    def _enum_items(self, items: Any) -> list[Any] | None:
        if not isinstance(items, dict):
            return None
        if "$ref" in items:
            items, _ = self.inline_ref(items, ())
        if "const" in items:
            return [items["const"]]
        if isinstance(items.get("enum"), list):
            rest = {k: v for k, v in items.items() if k not in ("enum",) and k not in ANNOTATIONS}
            return [v for v in items["enum"] if not rest or self.validates(v, rest)]
        if items.get("type") == "boolean" and len(items) == 1:
            return [False, True]
        return None

    def _unique_enum_array(self, values: list[Any], lo: int, hi: int | None, path: Path) -> ir.Node:
        """Distinct values, in enum order: a sub-sequence of the enum list."""
        values = list({canonical(v): v for v in values}.values())
        hi = len(values) if hi is None else min(hi, len(values))
        if self.limits.items is not None:
            hi = max(lo, min(hi, self.limits.items))
        if lo > hi:
            raise invalid(path, "minItems needs more distinct values than the enum has")
        comma = ir.seq(ir.lit(","), self.sep())
        lits = [ir.lit(self._dump(v)) for v in values]
        n = len(lits)
        # pick(i, need, room): choose items from index i on, at least ``need``, at most ``room`` more.
        memo: dict[tuple[int, int, int, bool], ir.Node] = {}

        def pick(i: int, need: int, room: int, first: bool) -> ir.Node:
            key = (i, need, room, first)
            if key in memo:
                return memo[key]
            if need > n - i:
                node = ir.NEVER
            elif i == n or room == 0:
                node = ir.EMPTY if need == 0 else ir.NEVER
            else:
                lead = ir.EMPTY if first else comma
                take = ir.seq(lead, lits[i], pick(i + 1, max(need - 1, 0), room - 1, False))
                node = self.rules.add("unique", ir.alt(take, pick(i + 1, need, room, first)))
            memo[key] = node
            return node

        return self._braced("[", "]", pick(0, lo, hi, True))

    # -- objects ---------------------------------------------------------------------------------------------
    def _extra_schema(self, schema: Schema) -> Any | None:
        """The schema of undeclared properties kaiyuan generates, or None when it generates none."""
        extra = schema.get("additionalProperties")
        has_declared = bool(schema.get("properties")) or bool(schema.get("required"))
        if extra is False or (self.strict and extra in (None, True)):
            return None
        if extra is None or extra is True:
            # Open object: generating only the declared properties is valid; with nothing declared, anything goes.
            return None if has_declared else True
        return extra

    def _compile_object(self, schema: Schema, path: Path) -> ir.Node:
        props = schema.get("properties", {})
        if not isinstance(props, dict):
            raise invalid((*path, "properties"), "'properties' must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise invalid((*path, "required"), "'required' must be an array of strings")
        extra = self._extra_schema(schema)
        explicit_extra = schema.get("additionalProperties")
        names = list(props)
        for name in required:
            if name not in props:
                if explicit_extra is False or (self.strict and explicit_extra in (None, True)):
                    raise invalid(path, f"property '{name}' is required but additionalProperties is false")
                names.append(name)
        required_set = set(required)
        min_props = self._int_keyword(schema, "minProperties", path) or 0
        max_props = self._int_keyword(schema, "maxProperties", path)
        entries: list[tuple[ir.Node, ir.Node, bool]] = []  # (first form, after-comma form, required)
        comma = ir.seq(ir.lit(","), self.sep())
        for name in names:
            if (
                name not in required_set
                and self.limits.max_optional == 0
                and not (min_props and not required_set)
            ):
                continue
            sub = props.get(name, explicit_extra if isinstance(explicit_extra, dict) else True)
            value = self.compile(sub, (*path, "properties", name))
            if ir.is_never(value):
                if name in required_set:
                    return ir.NEVER
                continue
            kv = ir.seq(ir.lit('"' + cs.json_string_body(name) + '"'), ir.lit(":"), self.sep(), value)
            kv = self.rules.add("prop-" + name, kv) if len(names) > 1 else kv
            entries.append((kv, ir.seq(comma, kv), name in required_set))
        declared_count = len(entries)
        n_required = sum(1 for e in entries if e[2])
        if extra is not None:
            if max_props is not None and declared_count:
                raise unsupported(
                    "maxProperties", path, "maxProperties is only enforced on maps or closed objects"
                )
            key = self._extra_key(schema, set(names), path)
            value = self.compile(extra, (*path, "additionalProperties"))
            if not ir.is_never(value):
                kv = ir.seq(key, ir.lit(":"), self.sep(), value)
                lo = max(min_props - declared_count, 0) if not declared_count else 0
                if min_props > n_required and declared_count:
                    raise unsupported(
                        "minProperties",
                        path,
                        "minProperties above the required count is only enforced on maps",
                    )
                hi = max_props
                if hi is None and self.limits.items is not None:
                    hi = max(lo, self.limits.items)
                if hi is None or hi > 0:
                    first = ir.seq(
                        kv, ir.rep(ir.seq(comma, kv), max(lo - 1, 0), None if hi is None else hi - 1)
                    )
                    after = ir.rep(ir.seq(comma, kv), max(lo, 1), hi)
                    entries.append((first, after, lo > 0))
            elif min_props > declared_count:
                raise invalid(path, "minProperties cannot be met")
        else:
            if min_props > n_required:
                raise unsupported(
                    "minProperties", path, "minProperties above the number of required properties"
                )
            if max_props is not None and max_props < declared_count:
                raise unsupported(
                    "maxProperties", path, "maxProperties below the number of declared properties"
                )
        return self._braced("{", "}", self._entries_body(entries))

    def _entries_body(self, entries: list[tuple[ir.Node, ir.Node, bool]]) -> ir.Node:
        """Entries in order: required ones always, optional ones maybe, commas only between present ones."""
        if not entries:
            return ir.EMPTY
        n_optional = sum(1 for e in entries if not e[2])
        cap = self.limits.max_optional
        if cap is not None and cap < n_optional:
            return self._entries_capped(entries, cap)
        # suffix[i]: entries i.. after at least one entry was written.
        suffix: list[ir.Node] = [ir.EMPTY] * (len(entries) + 1)
        for i in range(len(entries) - 1, -1, -1):
            _, after, req = entries[i]
            step = after if req else ir.opt(after)
            suffix[i] = ir.seq(step, suffix[i + 1])
            if len(entries) - i > 2 and i > 0:
                suffix[i] = self.rules.add("props-from", suffix[i])
        starts: list[ir.Node] = []
        for i, (first, _, req) in enumerate(entries):
            starts.append(ir.seq(first, suffix[i + 1]))
            if req:
                return ir.alt(*starts)
        return ir.opt(ir.alt(*starts))

    def _entries_capped(self, entries: list[tuple[ir.Node, ir.Node, bool]], cap: int) -> ir.Node:
        """Like ``_entries_body``, but at most ``cap`` optional entries (which ones is the model's choice)."""
        memo: dict[tuple[int, int, bool], ir.Node] = {}

        def body(i: int, room: int, first: bool) -> ir.Node:
            if i == len(entries):
                return ir.EMPTY
            key = (i, room, first)
            if key not in memo:
                first_form, after_form, req = entries[i]
                form = first_form if first else after_form
                if req:
                    node = ir.seq(form, body(i + 1, room, False))
                else:
                    take = ir.seq(form, body(i + 1, room - 1, False)) if room else ir.NEVER
                    node = ir.alt(take, body(i + 1, room, first))
                memo[key] = self.rules.add("props", node) if i else node
            return memo[key]

        return body(0, cap, True)

    def _extra_key(self, schema: Schema, declared: set[str], path: Path) -> ir.Node:
        names_schema = schema.get("propertyNames")
        if names_schema is not None:
            if declared:
                raise unsupported(
                    "propertyNames", path, "propertyNames together with declared properties and extra keys"
                )
            key = self.compile(
                {"type": "string", **names_schema} if isinstance(names_schema, dict) else names_schema,
                (*path, "propertyNames"),
            )
            if ir.is_never(key):
                raise invalid((*path, "propertyNames"), "no property name is allowed")
            return key
        if not declared:
            return self.free_string()
        return ir.seq(ir.lit('"'), self._not_names(sorted(declared)), ir.lit('"'))

    def _not_names(self, names: list[str]) -> ir.Node:
        """String bodies (JSON-encoded) that are none of ``names``: a walk down their trie."""
        char = self.string_char()
        cap = self.limits.string
        full = cs.subtract(cs.complement(()), cs.NEEDS_ESCAPE)

        def walk(prefix: str, depth: int) -> ir.Node:
            group = [n for n in names if n.startswith(prefix)]
            nexts = sorted({n[len(prefix)] for n in group if len(n) > len(prefix)})
            room = None if cap is None else max(cap - depth - 1, 0)
            parts: list[ir.Node] = []
            if prefix not in group:
                parts.append(ir.EMPTY)
            others = cs.subtract(full, cs.of_chars("".join(nexts)))
            parts.append(ir.seq(ir.Chars(others), ir.rep(char, 0, room)))
            if not self.limits.compact:
                escaped = [c for c in '"\\/\b\f\n\r\t' if c not in nexts]
                if escaped:
                    parts.append(
                        ir.seq(
                            ir.alt(
                                *(ir.lit(cs.json_escape_char(ord(c)) if c != "/" else "\\/") for c in escaped)
                            ),
                            ir.rep(char, 0, room),
                        )
                    )
            for c in nexts:
                parts.append(ir.seq(ir.lit(cs.json_escape_char(ord(c))), walk(prefix + c, depth + 1)))
            return ir.alt(*parts)

        return walk("", 0)


_DEFINITIONS = frozenset({"$defs", "definitions"})


def _back_edge_targets(edges: Callable[[str], list[str]]) -> set[str]:
    """Nodes that a depth-first walk from ``#`` reaches again while they are still open (iterative: a schema's
    reference graph may be deep)."""
    targets: set[str] = set()
    state: dict[str, int] = {"#": 1}  # 1: open, 2: done
    stack: list[tuple[str, Iterator[str]]] = [("#", iter(edges("#")))]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            state[node] = 2
            stack.pop()
        elif state.get(child) == 1:
            targets.add(child)
        elif child not in state:
            state[child] = 1
            stack.append((child, iter(edges(child))))
    return targets


_ROOT_URI = "urn:kaiyuan:schema-root"


def _absolute_refs(schema: object) -> object:
    """A copy of ``schema`` whose local ``$ref``s point into the root document registered under ``_ROOT_URI``."""
    if isinstance(schema, dict):
        return {
            k: (
                _ROOT_URI + v
                if k == "$ref" and isinstance(v, str) and v.startswith("#")
                else _absolute_refs(v)
            )
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_absolute_refs(v) for v in schema]
    return schema
