"""``kaiyuan run MODEL [PROMPT]``: answer one prompt, or chat interactively (Ollama habits).

Owns the terminal side of chatting: flags → native ``ChatRequest``, streaming the answer to stdout (the thinking,
when the model thinks, goes to stderr in a dim style so that stdout stays the answer), the interactive loop with
``/bye``, ``/clear``, ``/set system …``, and Ctrl-C stopping the current answer rather than the program.
The native chat path (``kaiyuan.chat``) does the work; this module only talks to the user.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

import click

from kaiyuan.types import ChatRequest, Message, SamplingParams, Usage

__all__ = ["run_command"]

_HELP_TEXT = """Available commands:
  /set system <text>   set the system message (empty text removes it)
  /show system         print the current system message
  /clear               forget the conversation so far
  /bye                 exit (Ctrl-D works too)
  /?, /help            this help
Ctrl-C stops the current answer; Enter on an empty line does nothing."""


def _load_model(name: str, *, ctx: int | None, threads: int | None) -> Any:
    """Resolve ``name`` in the store and start its engine with one sequence slot (one user at a terminal)."""
    from rich.console import Console

    from kaiyuan.config import load_settings
    from kaiyuan.model_loader import make_loader
    from kaiyuan.store import ModelStore

    settings = load_settings(ctx=ctx, threads=threads).replace(parallel=1, max_queue=4)
    store = ModelStore.from_settings(settings)
    manifest = store.resolve(name)  # ModelNotFound (with close names) before any spinner
    with Console(stderr=True).status(f"Loading {manifest.full_name} …", spinner="dots"):
        return make_loader(settings, store)(manifest.full_name)


def _request(
    model: Any, messages: list[Message], sampling: SamplingParams, think: bool | None
) -> ChatRequest:
    kwargs: dict[str, Any] = {} if think is None else {"enable_thinking": think}
    return ChatRequest(
        model=model.name, messages=list(messages), sampling=sampling, chat_template_kwargs=kwargs
    )


def _stream_answer(
    model: Any, request: ChatRequest, out: TextIO, err: TextIO, *, show_thinking: bool
) -> tuple[Message, str | None, Usage]:
    """Stream one answer; returns the assistant message, finish reason and usage. Ctrl-C cancels the answer."""
    from kaiyuan.chat import start_chat

    content: list[str] = []
    reasoning: list[str] = []
    finish: str | None = None
    usage = Usage()
    stream: Any = None
    thinking_open = False
    try:
        stream = start_chat(model, request)  # inside the try: Ctrl-C this early stops the answer too
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.reasoning:
                reasoning.append(chunk.reasoning)
                if show_thinking:
                    if not thinking_open:
                        err.write("\x1b[2mThinking…\n") if err.isatty() else err.write("Thinking…\n")
                        thinking_open = True
                    err.write(chunk.reasoning)
                    err.flush()
            if chunk.content:
                if thinking_open:
                    err.write("\n…done thinking.\x1b[0m\n\n" if err.isatty() else "\n…done thinking.\n\n")
                    thinking_open = False
                content.append(chunk.content)
                out.write(chunk.content)
                out.flush()
            for call in chunk.tool_calls:
                if call.name:
                    out.write(f"\n[tool call] {call.name}(")
                out.write(call.arguments)
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
    except KeyboardInterrupt:
        finish = "cancelled"
        out.write("\n^C (answer stopped)")
    finally:
        if stream is not None:
            stream.cancel()
        if thinking_open and err.isatty():
            err.write("\x1b[0m")
    out.write("\n")
    out.flush()
    message = Message(
        role="assistant", content="".join(content), reasoning_content="".join(reasoning) or None
    )
    return message, finish, usage


def _answer_with_tools(
    model: Any, request: ChatRequest, servers: tuple[str, ...], tool_choice: str
) -> tuple[Message, str | None, Usage]:
    """One answer with the MCP servers' tools (``--mcp``): each call and its result to stderr, the answer to
    stdout. The loop runs the calls the model makes until it answers (``kaiyuan.mcp``)."""
    from kaiyuan.chat import complete_chat
    from kaiyuan.config import load_settings
    from kaiyuan.mcp import ToolRun, run_tool_loop_sync

    request.tool_choice = tool_choice
    loop = run_tool_loop_sync(
        load_settings().mcp, request, servers, lambda native: complete_chat(model, native)
    )
    for step in loop.steps:
        if isinstance(step, ToolRun):
            status = "error" if step.is_error else "result"
            click.echo(f"[mcp] {step.server}.{step.call.name}({step.call.arguments})", err=True)
            click.echo(f"[mcp {status}] {step.output}", err=True)
    choice = loop.result.choices[0]
    for call in choice.message.tool_calls:  # a call to a tool no server offers: shown, not run
        click.echo(f"[tool call] {call.name}({call.arguments})")
    click.echo(choice.message.content or "")
    return choice.message, choice.finish_reason, loop.usage


def _interactive(
    model: Any, sampling: SamplingParams, system: str | None, think: bool | None, show_thinking: bool
) -> None:
    history: list[Message] = []
    click.echo(f">>> Chatting with {model.name}. Type /? for help, /bye to exit.", err=True)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo("", err=True)
            return
        except KeyboardInterrupt:
            click.echo("\n(Use Ctrl-D or /bye to exit.)", err=True)
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command in ("/bye", "/exit", "/quit"):
                return
            if command in ("/?", "/help"):
                click.echo(_HELP_TEXT, err=True)
            elif command == "/clear":
                history.clear()
                click.echo("Cleared the conversation.", err=True)
            elif command == "/set" and rest.partition(" ")[0] == "system":
                system = rest.partition(" ")[2].strip() or None
                click.echo("Set system message." if system else "Removed the system message.", err=True)
            elif command == "/show" and rest.strip() == "system":
                click.echo(system or "(no system message)", err=True)
            else:
                click.echo(f"Unknown command {command!r}. Type /? for help.", err=True)
            continue
        history.append(Message(role="user", content=line))
        messages = ([Message(role="system", content=system)] if system else []) + history
        answer, finish, _ = _stream_answer(
            model,
            _request(model, messages, sampling, think),
            sys.stdout,
            sys.stderr,
            show_thinking=show_thinking,
        )
        if finish == "cancelled" and not answer.content:
            history.pop()  # nothing was said: let the user ask again
        else:
            history.append(answer)


@click.command("run")
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("--system", help="System message to put before the conversation.")
@click.option(
    "--temperature", type=click.FloatRange(0, 2), help="Sampling temperature (0 = greedy). [default: 0.8]"
)
@click.option(
    "--top-p", type=click.FloatRange(0, 1), help="Nucleus sampling probability mass. [default: 0.95]"
)
@click.option("--max-tokens", type=click.IntRange(1), help="Stop after this many generated tokens.")
@click.option("--seed", type=int, help="Random seed, for reproducible sampling.")
@click.option("--ctx", type=click.IntRange(16), help="Context window in tokens. [default: 4096]")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for llama.cpp. [default: all cores]")
@click.option(
    "--think/--no-think",
    default=None,
    help="Turn the model's thinking on or off (templates that support it).",
)
@click.option("--hide-thinking", is_flag=True, help="Do not print the model's thinking.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object with the text, reasoning and usage."
)
@click.option(
    "--mcp",
    "mcp_servers",
    multiple=True,
    metavar="NAME",
    help="Let the model call the tools of this MCP server ([mcp.servers.NAME] in kaiyuan.toml); repeatable.",
)
@click.option(
    "--tool-choice",
    type=click.Choice(["auto", "required"]),
    default="auto",
    show_default=True,
    help="With --mcp: whether the model must call a tool first.",
)
def run_command(
    model: str,
    prompt: str | None,
    system: str | None,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    seed: int | None,
    ctx: int | None,
    threads: int | None,
    think: bool | None,
    hide_thinking: bool,
    as_json: bool,
    mcp_servers: tuple[str, ...],
    tool_choice: str,
) -> None:
    """Chat with MODEL, or answer PROMPT and exit.

    \b
    Examples:
      kaiyuan run smollm2 "What is the capital of France?" --temperature 0
      echo "Summarise: ..." | kaiyuan run smollm2
      kaiyuan run smollm2            (interactive chat; /? for help)
      kaiyuan run smollm2 "Weather in Paris?" --mcp weather   (tools of an MCP server)
    """
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if prompt is None and as_json:
        raise click.UsageError("--json needs a PROMPT (argument or standard input)")
    if mcp_servers and (prompt is None or as_json):
        raise click.UsageError("--mcp answers one PROMPT (argument or standard input), without --json")
    sampling = SamplingParams(max_tokens=max_tokens, seed=seed)
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p

    loaded = _load_model(model, ctx=ctx, threads=threads)
    try:
        if prompt is None:
            _interactive(loaded, sampling, system, think, show_thinking=not hide_thinking)
            return
        messages = ([Message(role="system", content=system)] if system else []) + [
            Message(role="user", content=prompt)
        ]
        request = _request(loaded, messages, sampling, think)
        if mcp_servers:
            _answer_with_tools(loaded, request, mcp_servers, tool_choice)
            return
        if as_json:
            from kaiyuan.chat import complete_chat_sync

            result = complete_chat_sync(loaded, request)
            choice = result.choices[0]
            usage = asdict(result.usage) | {"total_tokens": result.usage.total_tokens}
            payload = {
                "model": loaded.name,
                "text": choice.message.content or "",
                "reasoning": choice.message.reasoning_content,
                "tool_calls": [asdict(call) for call in choice.message.tool_calls],
                "finish_reason": choice.finish_reason,
                "usage": usage,
            }
            click.echo(json.dumps(payload, ensure_ascii=False))
            return
        _, finish, _ = _stream_answer(
            loaded, request, sys.stdout, sys.stderr, show_thinking=not hide_thinking
        )
        if finish == "cancelled":
            sys.exit(130)
    finally:
        loaded.engine.close()
