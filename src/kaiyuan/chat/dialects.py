"""Model families ("dialects"): how each one marks its thinking and writes its tool calls.

Owns the catalogue of dialects and their detection from the chat template's text. A dialect names the reasoning
markers, the tool-call parser (``kaiyuan.chat.tool_call_parsers``) and how tool-call ids must look; it builds
its tool-call grammar through ``kaiyuan.chat.tool_grammars``. It knows nothing of engines or HTTP.

Detection reads the template source only (never the model name): the markers a template renders are exactly the
markers its model was trained to produce.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
from dataclasses import dataclass
from typing import Any

__all__ = ["DIALECTS", "Dialect", "detect_dialect", "dialect_by_name"]

_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Dialect:
    """What kaiyuan knows about one family's output format.

    ``reasoning_start``/``reasoning_end`` are ``None`` for a model that does not think (its output is left
    untouched). ``content_start``/``content_end`` wrap the answer in some families (ERNIE's ``<response>``).
    ``tool_call_id_length`` forces rendered tool-call ids to that many alphanumerics (Mistral: 9). ``variant``
    picks between formats one family has used (it matters for writing calls, not for reading them: the parsers
    accept every variant).
    """

    name: str
    tool_parser: str
    reasoning_start: str | None = None
    reasoning_end: str | None = None
    content_start: str | None = None
    content_end: str | None = None
    tool_call_id_length: int | None = None
    variant: str = ""  # a format detail within the family (Mistral "v3"/"v11" calls, GLM "compact" tags)
    description: str = ""
    # OpenAI reasoning_effort → the value this family's template understands (absent: passed on unchanged)
    template_efforts: tuple[tuple[str, str], ...] = ()

    @property
    def has_reasoning(self) -> bool:
        return self.reasoning_start is not None and self.reasoning_end is not None

    def think_opened_in_prompt(self, rendered_prompt: str) -> bool:
        """True when the rendered generation prompt ends inside an open think block.

        The DeepSeek R1 distills, QwQ/Qwen3 with thinking on, GLM-4.7 and Hunyuan with a reasoning effort end
        their prompt with the start marker, so the model's output begins with reasoning and no opening tag.
        """
        if not self.has_reasoning:
            return False
        assert self.reasoning_start is not None
        return rendered_prompt.rstrip().endswith(self.reasoning_start)

    def template_reasoning_effort(self, effort: str) -> str:
        """The ``reasoning_effort`` template variable for an OpenAI ``reasoning_effort`` value (Hunyuan's
        template accepts only ``no_think``/``low``/``high`` and refuses anything else)."""
        return dict(self.template_efforts).get(effort, effort)

    def new_tool_call_id(self) -> str:
        """A fresh id for a parsed tool call (``call_<random>``; 9 alphanumerics where the family requires it)."""
        if self.tool_call_id_length:
            return "".join(secrets.choice(_ID_ALPHABET) for _ in range(self.tool_call_id_length))
        return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))

    def tool_call_grammar(
        self, tools: list[dict[str, Any]], tool_choice: str | dict[str, Any], *, parallel: bool
    ) -> str:
        """GBNF that only admits a valid tool call in this dialect's format (see ``tool_grammars``)."""
        from kaiyuan.chat.tool_grammars import build_tool_call_grammar

        return build_tool_call_grammar(self, tools, tool_choice, parallel)


_THINK = ("<think>", "</think>")

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        Dialect("hermes", "hermes", description="Hermes 2 Pro/3, Qwen 2.5: <tool_call>{json}</tool_call>"),
        Dialect(
            "qwen3", "hermes", *_THINK, description="Qwen3, QwQ: <think> + <tool_call>{json}</tool_call>"
        ),
        Dialect(
            "qwen3-coder",
            "qwen3_coder",
            description="Qwen3-Coder, Qwen3.5: <tool_call><function=name><parameter=k>v</parameter>…",
        ),
        Dialect(
            "deepseek-r1",
            "deepseek_r1",
            *_THINK,
            description="DeepSeek R1 and its distills: <｜tool▁call▁begin｜>function<｜tool▁sep｜>name ```json …",
        ),
        Dialect(
            "deepseek-v3.1", "deepseek_v31", *_THINK, description="DeepSeek V3.1: name<｜tool▁sep｜>{json}"
        ),
        Dialect(
            "deepseek-v3.2",
            "deepseek_v32",
            *_THINK,
            description="DeepSeek V3.2: <｜DSML｜function_calls><｜DSML｜invoke name=…> XML",
        ),
        Dialect(
            "glm45", "glm45", *_THINK, description="GLM-4.5/4.6/4.7: <tool_call>name<arg_key>k</arg_key>…"
        ),
        Dialect(
            "hunyuan",
            "hunyuan",
            "<think:opensource>",
            "</think:opensource>",
            description="Tencent Hunyuan (Hy3): <tool_calls:opensource> with <arg_key:opensource> pairs",
            template_efforts=(
                ("none", "no_think"),
                ("minimal", "low"),
                ("medium", "high"),
                ("xhigh", "high"),
                ("max", "high"),
            ),
        ),
        Dialect(
            "kimi-k2",
            "kimi_k2",
            description="Kimi K2: <|tool_calls_section_begin|><|tool_call_begin|>functions.name:0 …",
        ),
        Dialect("llama3", "llama3", description='Llama 3.1/3.2/3.3: {"name": …, "parameters": {…}}'),
        Dialect(
            "mistral",
            "mistral",
            tool_call_id_length=9,
            description="Mistral: [TOOL_CALLS][{…}] or [TOOL_CALLS]name[ARGS]{…}",
        ),
        Dialect(
            "ernie45",
            "hermes",
            content_start="<response>",
            content_end="</response>",
            description="ERNIE 4.5: <think> … </think> <response>…</response> or <tool_call>{json}</tool_call>",
        ),
        Dialect(
            "generic",
            "generic",
            description='unknown family: {"name": …, "arguments": …} JSON or <tool_call>',
        ),
    )
}


def dialect_by_name(name: str) -> Dialect:
    """The catalogue dialect called ``name`` (for an explicit per-model override); ``KeyError`` lists the names."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise KeyError(f"unknown dialect {name!r}; known: {', '.join(sorted(DIALECTS))}") from None


def _with_reasoning(dialect: Dialect, source: str, start: str, end: str) -> Dialect:
    """The dialect with reasoning markers exactly when the template mentions them."""
    if start in source:
        return dataclasses.replace(dialect, reasoning_start=start, reasoning_end=end)
    return dataclasses.replace(dialect, reasoning_start=None, reasoning_end=None)


def detect_dialect(template_source: str | None) -> Dialect:
    """The dialect of a chat template, from the markers its text renders. ``None`` (no template) → generic."""
    src = template_source or ""
    think_start, think_end = _THINK
    if "hy_Assistant" in src or "<think{}>" in src:
        return DIALECTS["hunyuan"]
    if "DSML" in src:
        return _with_reasoning(DIALECTS["deepseek-v3.2"], src, think_start, think_end)
    if "<｜tool▁calls▁begin｜>" in src or "<｜Assistant｜>" in src:
        name = "deepseek-r1" if ("```json" in src or "<｜tool▁calls▁begin｜>" not in src) else "deepseek-v3.1"
        return _with_reasoning(DIALECTS[name], src, think_start, think_end)
    if "<|tool_calls_section_begin|>" in src:
        return _with_reasoning(DIALECTS["kimi-k2"], src, think_start, think_end)
    if "<arg_key>" in src and "<tool_call>" in src:
        compact = "</arg_key><arg_value>" in src and "</arg_key>\n<arg_value>" not in src
        glm = dataclasses.replace(DIALECTS["glm45"], variant="compact" if compact else "")
        return _with_reasoning(glm, src, think_start, think_end)
    if "<function=" in src and "<parameter=" in src:
        return _with_reasoning(DIALECTS["qwen3-coder"], src, think_start, think_end)
    if "[TOOL_CALLS]" in src:
        mistral = dataclasses.replace(DIALECTS["mistral"], variant="v11" if "[ARGS]" in src else "v3")
        return _with_reasoning(mistral, src, "[THINK]", "[/THINK]")
    if (
        "<global_setting>" in src
        or "think_mode" in src
        or ("<|begin_of_sentence|>" in src and "Assistant: " in src)
    ):
        return _with_reasoning(DIALECTS["ernie45"], src, think_start, think_end)
    if "<|start_header_id|>" in src and '"parameters": ' in src and "<function=" not in src:
        return DIALECTS["llama3"]
    if "<tool_call>" in src:
        return _with_reasoning(DIALECTS["hermes" if think_start not in src else "qwen3"], src, *_THINK)
    return _with_reasoning(DIALECTS["generic"], src, think_start, think_end)
