"""Chat templates: render a conversation to a prompt with the model's own (untrusted) Jinja template.

Owns the sandbox, the Hugging Face rendering semantics (``raise_exception``, ``strftime_now``, HF's ``tojson``,
``trim_blocks``/``lstrip_blocks``, loop controls, ``bos_token``/``eos_token``, extra template kwargs), the
conversion of native ``kaiyuan.types.Message`` objects into the dict shape templates expect, and the documented
ChatML fallback for models without a template. It knows nothing of tokens, engines or HTTP.

Sandbox: templates come from model files, so they render in a subclass of jinja2's
``ImmutableSandboxedEnvironment``. Two deliberate differences from the stock class:

* touching an unsafe attribute (``__class__``, ``__globals__``, ``mro`` …) raises at once instead of yielding an
  undefined value, so an escape attempt is a loud :class:`~kaiyuan.errors.TemplateError` and never half-renders;
* ``append``/``pop``/``extend``/``insert`` are allowed on *lists* (Moonshot's Kimi K2 templates keep a queue of
  tool-call ids that way). Every render gets fresh copies of the messages and tools, so a template can only
  change its own data; dicts and sets stay immutable.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import sys
import types
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from kaiyuan.chat.tool_prompt import with_tool_system_message
from kaiyuan.errors import TemplateError
from kaiyuan.types import Message, ToolCall

if TYPE_CHECKING:
    from kaiyuan.chat.dialects import Dialect

__all__ = ["CHATML_FALLBACK_TEMPLATE", "ChatTemplate"]

log = logging.getLogger(__name__)

# The fallback for models whose file carries no template: ChatML (``<|im_start|>role\ncontent<|im_end|>``), with
# tools described and called the Hermes way (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``), which
# is what most ChatML fine-tunes were trained on and what the generic tool-call parser reads.
CHATML_FALLBACK_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages and messages[0].role == 'system' %}{{ messages[0].content + '\\n\\n' }}{% endif %}
{{- 'You may call one or more functions to assist with the user query. Function signatures are within <tools></tools>:\\n<tools>' }}
{%- for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}
{{- '\\n</tools>\\nTo call a function, reply with <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call> for each call.<|im_end|>\\n' }}
{%- elif messages and messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'assistant' and message.tool_calls %}
{{- '<|im_start|>assistant\\n' + (message.content or '') }}
{%- for call in message.tool_calls %}
{{- '<tool_call>' + ({'name': call.function.name, 'arguments': call.function.arguments} | tojson) + '</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>tool\\n<tool_response>' + message.content + '</tool_response><|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
"""

_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "kaiyuan_probe",
            "description": "probe",
            "parameters": {"type": "object", "properties": {"q": {"type": "integer", "description": "q"}}},
        },
    }
]

_MAX_EXPONENT = 1024
_MAX_BITS = 100_000
_MAX_REPEAT = 1_000_000

_LIST_MUTATORS = frozenset({"append", "pop", "extend", "insert"})


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment that fails loudly on unsafe access, lets templates grow their own lists and
    refuses arithmetic that would exhaust memory or time (``'x' * 10**12``, ``10 ** 10 ** 10``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if (
            operator == "**"
            and isinstance(right, int | float)
            and (
                abs(right) > _MAX_EXPONENT
                or (isinstance(left, int) and abs(left).bit_length() * right > _MAX_BITS)
            )
        ):
            raise jinja2.TemplateRuntimeError(f"the power {right} is too large for a chat template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > _MAX_REPEAT
                ):
                    raise jinja2.TemplateRuntimeError(
                        "a repeated string or list is too large for a chat template"
                    )
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, list) and attr in _LIST_MUTATORS:
            # Mutating a list is what SandboxedEnvironment allows; renders only ever see per-render copies.
            return super(ImmutableSandboxedEnvironment, self).is_safe_attribute(obj, attr, value)
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")


class _JSONArguments(dict[str, Any]):
    """Tool-call arguments as templates want them: a mapping that also concatenates and prints as its JSON text.

    Most templates iterate ``arguments|items`` or apply ``tojson`` (they want the parsed object); a few concatenate
    it into a string (``'...' + arguments``), which on a plain dict would fail. This object satisfies both.
    """

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: object) -> str:
        if isinstance(other, str):
            return str(self) + other
        return NotImplemented

    def __radd__(self, other: object) -> str:
        if isinstance(other, str):
            return other + str(self)
        return NotImplemented


def _hf_tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's ``tojson``: plain ``json.dumps`` (no HTML escaping), non-ASCII kept, options passed through.

    Lazy sequences (``tools | map(attribute='function')`` yields a generator) are written as JSON arrays.
    """
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
        default=_json_default,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (types.GeneratorType, map, filter, tuple, set, frozenset)) or (
        hasattr(value, "__iter__") and hasattr(value, "__next__")
    ):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _from_json(text: str) -> Any:
    """``from_json`` filter (llama.cpp's minja has it; DeepSeek V3.2's template uses it for string arguments)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise jinja2.TemplateRuntimeError(f"from_json: not JSON: {exc}") from exc


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateRuntimeError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}…{% endgeneration %}``: Hugging Face marks the assistant's tokens with it (for training
    masks); for rendering a prompt it simply outputs its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja2's Extension API declares it as a plain class attribute

    def parse(self, parser: Any) -> Any:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _build_env() -> _ChatSandbox:
    env = _ChatSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag]
    )
    env.filters["tojson"] = _hf_tojson
    env.filters["from_json"] = _from_json
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _template_line(tb: types.TracebackType | None) -> int | None:
    """The template line of the innermost frame that ran template code, if any."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _arguments_for_template(arguments: str) -> Any:
    """Arguments as a mapping when they are a JSON object (what most templates expect), else the raw string."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        return _JSONArguments(parsed)
    return arguments


def _short_id(call_id: str, length: int) -> str:
    """A stable alphanumeric id of ``length`` characters (Mistral's templates insist on 9)."""
    if len(call_id) == length and call_id.isalnum():
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()
    return digest[:length]


class ChatTemplate:
    """A model's chat template, compiled once in the sandbox; :meth:`render` turns messages into a prompt.

    ``source`` is the Jinja text (from the GGUF's ``tokenizer.chat_template``); ``None`` or blank selects the
    documented ChatML fallback (:data:`CHATML_FALLBACK_TEMPLATE`) and logs a warning. A template with a syntax
    error raises :class:`~kaiyuan.errors.TemplateError` naming the line.
    """

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        self.is_fallback = source is None or not source.strip()
        if self.is_fallback:
            log.warning(
                "the model has no chat template; using kaiyuan's ChatML fallback "
                "(<|im_start|>role\\ncontent<|im_end|>). Answers may be poor if the model was trained otherwise."
            )
            source = CHATML_FALLBACK_TEMPLATE
        assert source is not None
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        env = _build_env()
        try:
            tree = env.parse(source)
            self._template = env.from_string(tree)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"the chat template has a syntax error at line {exc.lineno}: {exc.message}; "
                "fix the template (or import the model with a corrected one)"
            ) from exc
        self._null_content_ok: bool | None = None
        self._shows_tools: bool | None = None
        self._dialect: Dialect | None = None
        # Whether the template reads ``enable_thinking`` (a thinking switch: Qwen3, the R1 distills in
        # llama.cpp's collection, GLM, DeepSeek V3.1+ …); the chat layer decides what to pass.
        self.has_thinking_switch = "enable_thinking" in jinja2.meta.find_undeclared_variables(tree)

    @property
    def dialect(self) -> Dialect:
        """The model family this template belongs to (reasoning markers, tool-call format)."""
        if self._dialect is None:
            from kaiyuan.chat.dialects import detect_dialect

            self._dialect = detect_dialect(None if self.is_fallback else self.source)
        return self._dialect

    def render(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        """Render ``messages`` (and OpenAI-shaped ``tools``) to the prompt text.

        Extra keyword arguments become template variables (``chat_template_kwargs`` such as ``enable_thinking``).
        Raises :class:`~kaiyuan.errors.TemplateError` when the template refuses the conversation
        (``raise_exception``), fails, or tries to leave the sandbox.
        """
        if tools and not self.shows_tools:
            messages = with_tool_system_message(messages, tools, self.dialect.tool_parser)
            tools = None
        id_length = self.dialect.tool_call_id_length
        null_content = self._null_content_allowed(id_length)
        hf_messages = [_to_hf(m, id_length=id_length, null_content=null_content) for m in messages]
        return self._render(hf_messages, tools=tools, add_generation_prompt=add_generation_prompt, **kwargs)

    @property
    def shows_tools(self) -> bool:
        """Whether the template writes the tools it is given into the prompt. Those that do not (SmolLM2's) get
        the tools described in a system message instead (``tool_prompt``), as llama.cpp's generic format does.
        Decided once per template by rendering a probe conversation with and without a tool."""
        if self._shows_tools is None:
            probe = [{"role": "user", "content": "kaiyuan probe question"}]
            try:
                with_tool = self._render(probe, tools=_PROBE_TOOLS, add_generation_prompt=True)
                without = self._render(probe, tools=None, add_generation_prompt=True)
                self._shows_tools = with_tool != without
            except TemplateError:
                self._shows_tools = (
                    True  # a template that refuses the probe is left to render tools its own way
                )
        return self._shows_tools

    def _render(
        self,
        hf_messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool,
        **kwargs: Any,
    ) -> str:
        variables: dict[str, Any] = {"bos_token": self.bos_token, "eos_token": self.eos_token}
        variables.update(copy.deepcopy(kwargs))
        variables["messages"] = hf_messages
        variables["tools"] = copy.deepcopy(tools) if tools else None
        variables["add_generation_prompt"] = add_generation_prompt
        try:
            return self._template.render(**variables)
        except SecurityError as exc:
            raise TemplateError(
                f"the chat template tried to escape its sandbox ({exc}); nothing was executed. "
                "Do not use this model file's template: it may be malicious"
            ) from exc
        except jinja2.TemplateRuntimeError as exc:
            line = _template_line(sys.exc_info()[2])
            where = f" (template line {line})" if line else ""
            raise TemplateError(f"the chat template refused the conversation{where}: {exc}") from exc
        except jinja2.TemplateError as exc:
            line = _template_line(sys.exc_info()[2])
            where = f" at line {line}" if line else ""
            raise TemplateError(f"the chat template failed{where}: {exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
            line = _template_line(sys.exc_info()[2])
            where = f" at line {line}" if line else ""
            raise TemplateError(
                f"the chat template failed{where}: {type(exc).__name__}: {exc}; "
                "the conversation may not fit what this model's template expects"
            ) from exc

    def _null_content_allowed(self, id_length: int | None) -> bool:
        """Whether this template renders an assistant tool-call turn with ``content: None`` properly.

        OpenAI sends ``content: null`` next to tool calls. Some templates need that (DeepSeek R1 distills test
        ``content is none``), others break on it (Qwen3 runs ``'</think>' in content``) or print ``None``
        (GLM). A probe conversation decides once per template, the way llama.cpp's minja probes capabilities.
        """
        if self._null_content_ok is None:
            probe_call = ToolCall(name="kaiyuan_probe", arguments='{"q": 1}', id="call_probe0")
            probe = [
                Message(role="user", content="kaiyuan probe question"),
                Message(role="assistant", content=None, tool_calls=[probe_call]),
                Message(role="tool", content="kaiyuan probe result", tool_call_id="call_probe0"),
            ]
            outputs: list[str | None] = []
            for null_content in (True, False):
                hf = [_to_hf(m, id_length=id_length, null_content=null_content) for m in probe]
                try:
                    outputs.append(self._render(hf, tools=_PROBE_TOOLS, add_generation_prompt=True))
                except TemplateError:
                    outputs.append(None)
            with_null, with_empty = outputs
            self._null_content_ok = with_null is not None and (
                with_empty is None or with_null.count("None") <= with_empty.count("None")
            )
        return self._null_content_ok


def _to_hf(message: Message, *, id_length: int | None, null_content: bool) -> dict[str, Any]:
    """One native message in the dict shape Hugging Face templates read.

    Keys are present only when they carry something: templates test ``'tool_calls' in message`` (Llama 3.1) or
    ``message.tool_calls is defined`` (Hermes), so an empty list would be read as a tool-call turn.
    """
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if content is None and not (null_content and message.tool_calls):
        content = ""
    out: dict[str, Any] = {"role": role, "content": content}
    if message.reasoning_content is not None:
        out["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": _short_id(call.id, id_length) if id_length and call.id else call.id,
                "type": call.type or "function",
                "function": {"name": call.name, "arguments": _arguments_for_template(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = (
            _short_id(message.tool_call_id, id_length) if id_length else message.tool_call_id
        )
    if message.name is not None:
        out["name"] = message.name
    return out
