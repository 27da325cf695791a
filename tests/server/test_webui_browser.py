"""The web chat at ``/`` in a real browser (Debian's chromium via Playwright) against a real ``kaiyuan serve``.

The server runs the bundled SmolLM2-135M-Instruct and a tiny random-weight model with DeepSeek-R1's chat template
(imported with ``kaiyuan import``), with one llama.cpp thread. Replies from a random model are noise, so the tests
check how the page shows them (streamed, stopped, folded, stored), never what they say. Attack strings go through
the page's own Markdown renderer and, end to end, through a reply the browser receives from a route stub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import tiny_gguf
from tests.server.webui.harness import CHROMIUM, CHROMIUM_ARGS, Server, run_kaiyuan, start_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect  # noqa: E402

from tests.server.webui.chat_page import ChatPage  # noqa: E402

tiny_gguf_factory = tiny_gguf.tiny_gguf_factory

SMOL = "smollm2:135m"
R1 = "r1-tiny:latest"
R1_TEMPLATE = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"
SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for this module only: Playwright's sync API keeps an event loop running while it is started,
    which would break later tests that call ``asyncio.run``."""
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_gguf_factory: Callable[..., Path]
) -> Iterator[Server]:
    """``kaiyuan serve`` with SmolLM2 (bundled) and an R1-style tiny model imported under ``r1-tiny``."""
    home = tmp_path_factory.mktemp("webui-home")
    r1 = tiny_gguf_factory(
        arch="qwen2",
        chat_template=tiny_gguf.template_text(R1_TEMPLATE),
        extra_special_tokens=["<think>", "</think>"],
        license={"id": "mit", "name": "MIT License", "link": "https://opensource.org/license/mit"},
        name="r1-tiny",
    )
    run_kaiyuan(home, "import", str(r1), "--name", "r1-tiny")
    srv = start_server(home, tmp_path_factory.mktemp("webui-log") / "serve.log", args=["--parallel", "1"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("webui-keyed-home")
    srv = start_server(
        home, tmp_path_factory.mktemp("webui-keyed-log") / "serve.log", args=["--api-key", "sesame"]
    )
    yield srv
    srv.stop()


class Tab:
    """A fresh browser context (empty localStorage) with a page that records every request it makes."""

    def __init__(self, browser: Browser, base_url: str, **options: Any) -> None:
        self.context: BrowserContext = browser.new_context(accept_downloads=True, **options)
        self.page: Page = self.context.new_page()
        self.base_url = base_url
        self.requests: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.page.on("request", self._on_request)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("dialog", self._on_dialog)

    def _on_request(self, request: Any) -> None:
        self.requests.append(request.url)
        if request.url.endswith("/v1/chat/completions") and request.method == "POST":
            self.bodies.append(json.loads(request.post_data or "{}"))

    def _on_dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog opened: {dialog.type} {dialog.message!r}")
        dialog.dismiss()

    def chat(self, model: str | None = SMOL) -> ChatPage:
        return ChatPage(self.page, self.base_url).open(model)

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems
        outside = [
            u for u in self.requests if not (u.startswith(self.base_url) or u.startswith(("data:", "blob:")))
        ]
        assert not outside, f"requests left the machine: {outside}"


@pytest.fixture
def tab(browser: Browser, server: Server) -> Iterator[Callable[..., Tab]]:
    made: list[Tab] = []

    def open_tab(srv: Server = server, **options: Any) -> Tab:
        options.setdefault("viewport", {"width": 1280, "height": 800})
        options.setdefault("color_scheme", "light")
        made.append(Tab(browser, srv.url, **options))
        return made[-1]

    yield open_tab
    for t in made:
        t.close()


def sse(*deltas: dict[str, Any], finish: str = "stop", tail: tuple[dict[str, Any], ...] = ()) -> str:
    """An OpenAI chat-completion stream body with ``deltas``, a finish chunk, ``tail`` events and [DONE]."""
    chunks = [
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": SMOL,
            "choices": [{"index": 0, "delta": d}],
        }
        for d in ({"role": "assistant", "content": ""}, *deltas)
    ]
    chunks.append({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": SMOL,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})  # fmt: skip
    chunks.extend(tail)
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def stub_reply(page: Page, body: str, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
    """Answer the page's next chat completions from the browser side with ``body`` (the server is not asked)."""

    def handle(route: Route) -> None:
        route.fulfill(
            status=status,
            headers={
                "Content-Type": "text/event-stream" if status == 200 else "application/json",
                **(headers or {}),
            },
            body=body,
        )

    page.route("**/v1/chat/completions", handle)


# ------------------------------------------------------------------------------------------------- chatting


def test_reply_streams_token_by_token_with_the_chosen_settings(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat()
    expect(chat.model).to_have_value(SMOL)
    # no MCP servers in this server's kaiyuan.toml: no tools menu (tests/server/test_webui_tools_browser.py has one)
    expect(chat.page.get_by_role("button", name="Tools")).to_be_hidden()
    # the prompt asks for sentences so that the reply runs to many tokens (a terse one-liner may render in two
    # steps); measured: 21-48 tokens over six seeds at this temperature
    chat.settings(system_prompt="You are a helpful assistant.", temperature="0.2", max_tokens="48")
    chat.watch_answer()

    # Shift+Enter adds a line and sends nothing; Enter sends.
    chat.message.fill("Describe three colours.")
    chat.message.press("Shift+Enter")
    chat.message.type("One sentence each.")
    assert chat.message.input_value() == "Describe three colours.\nOne sentence each."
    assert t.bodies == []
    chat.message.press("Enter")
    expect(chat.stop_button).to_be_visible()
    expect(chat.message).to_have_value("")
    answer = chat.wait_reply()

    body = t.bodies[0]
    assert body["model"] == SMOL and body["stream"] is True
    assert body["temperature"] == 0.2 and body["max_tokens"] == 48
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Describe three colours.\nOne sentence each."},
    ]
    text = answer.locator(".msg-body").inner_text()
    assert text.strip()
    growing = [s["text"] for s in chat.answer_states() if s["streaming"] and s["text"]]
    assert len(set(growing)) >= 3, f"the answer appeared in fewer than 3 steps: {growing}"
    expect(answer.locator(".msg-meta")).to_have_text(f"Assistant · {SMOL}")
    expect(chat.page.get_by_role("button", name="Regenerate")).to_be_visible()
    stored = chat.stored()[0]["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    # what is shown is the stored answer, rendered as Markdown
    shown = answer.locator(".msg-body").text_content()
    assert shown == chat.page.evaluate(
        """async (text) => {
          const { renderMarkdown } = await import('./markdown.js');
          const d = document.createElement('div'); d.appendChild(renderMarkdown(text)); return d.textContent;
        }""",
        stored[1]["content"],
    )


def test_stop_aborts_the_reply_and_the_server_frees_the_slot(tab: Callable[..., Tab], server: Server) -> None:
    t = tab()
    chat = t.chat()
    # a hot sampler rarely picks end-of-text, so the reply runs until stopped (max tokens bounds it otherwise)
    chat.settings(temperature="1.8", max_tokens="700")
    chat.ask("Tell me a very long story about a lighthouse keeper.")
    answer = chat.answers.last
    expect(answer.locator(".msg-body")).not_to_have_text("", timeout=120_000)
    assert server.metric("kaiyuan_requests_running") == 1

    chat.stop_button.click()
    chat.wait_reply(timeout=10_000)
    expect(answer.locator(".msg-note")).to_have_text("Stopped.")
    assert server.wait_metric("kaiyuan_requests_running", 0) == 0, server.log_tail()
    kept = answer.locator(".msg-body").inner_text()
    time.sleep(1.0)
    assert answer.locator(".msg-body").inner_text() == kept, "nothing arrives after Stop"
    assert chat.stored()[0]["messages"][-1]["stopped"] is True

    # with one slot (--parallel 1), a slot still held would queue the next request behind the stopped one
    chat.settings(temperature="0.2", max_tokens="8")
    chat.ask("Say hi.")
    chat.wait_reply(timeout=60_000)
    expect(chat.answers).to_have_count(2)
    assert not chat.answers.last.locator(".msg-error").count()


def test_escape_stops_a_reply(tab: Callable[..., Tab], server: Server) -> None:
    chat = tab().chat()
    chat.settings(temperature="1.8", max_tokens="700")
    chat.ask("Write a long poem about rivers.")
    expect(chat.answers.last.locator(".msg-body")).not_to_have_text("", timeout=120_000)
    chat.page.keyboard.press("Escape")
    chat.wait_reply(timeout=10_000)
    expect(chat.answers.last.locator(".msg-note")).to_have_text("Stopped.")
    assert server.wait_metric("kaiyuan_requests_running", 0) == 0


def test_regenerate_replaces_the_last_answer(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat()
    chat.settings(max_tokens="8")
    chat.ask("Say hello.")
    chat.wait_reply()
    chat.page.get_by_role("button", name="Regenerate").click()
    chat.wait_reply()
    expect(chat.answers).to_have_count(1)
    expect(chat.questions).to_have_count(1)
    assert len(t.bodies) == 2
    assert t.bodies[1]["messages"] == t.bodies[0]["messages"] == [{"role": "user", "content": "Say hello."}]


def test_switching_model_keeps_the_conversation(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat()
    options = chat.model.locator("option")
    expect(options).to_have_count(2)
    assert set(options.evaluate_all("os => os.map(o => o.value)")) == {SMOL, R1}
    expect(chat.page.locator("#model-badges .badge").first).to_have_text("Apache-2.0")

    chat.settings(max_tokens="8")
    chat.ask("Hello there.")
    chat.wait_reply()
    first = chat.stored()[0]["messages"][1]["content"]
    chat.model.select_option(R1)
    expect(chat.page.locator("#model-badges .badge").first).to_have_text("MIT")
    expect(chat.questions).to_have_count(1)  # the conversation is still on screen
    chat.ask("And you?")
    chat.wait_reply()

    expect(chat.questions).to_have_count(2)
    expect(chat.answers).to_have_count(2)
    expect(chat.answers.nth(0).locator(".msg-meta")).to_have_text(f"Assistant · {SMOL}")
    expect(chat.answers.nth(1).locator(".msg-meta")).to_have_text(f"Assistant · {R1}")
    body = t.bodies[-1]
    assert body["model"] == R1
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1] == {"role": "assistant", "content": first}  # the earlier answer, as context
    expect(chat.conversations).to_have_count(1)
    assert chat.stored()[0]["model"] == R1


def test_reasoning_is_shown_in_a_thinking_section_folded_after_the_reply(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat(R1)
    # this template opens <think> in the prompt when enable_thinking is set, so the output is all reasoning
    chat.settings(max_tokens="300", temperature="1.0", thinking="On (enable_thinking: true)")
    # The tiny model writes 300 tokens faster than a frame or two; a slow line (16 kB/s, about 60 chunks a
    # second) lets the page paint while the reply is still coming in, as it would for a real model.
    cdp = t.context.new_cdp_session(t.page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": 16_000, "uploadThroughput": -1},
    )
    chat.watch_answer()
    chat.ask("Why is the sky blue?")
    answer = chat.wait_reply()

    thinking = answer.locator("details.thinking")
    expect(thinking).to_have_count(1)
    expect(thinking).not_to_have_attribute("open", "")
    summary = thinking.locator("summary").inner_text()
    match = re.fullmatch(r"Thinking · (\d+) tokens? · ([\d.]+) s", summary)
    assert match, summary
    assert 1 <= int(match.group(1)) <= 300
    states = chat.answer_states()
    live = [s["thinking"] for s in states if s["streaming"] and s["open"] and s["thinking"]]
    assert len(set(live)) >= 3, f"Thinking should be open and growing while streaming: {states}"

    assert t.bodies[0]["chat_template_kwargs"] == {"enable_thinking": True}
    stored = chat.stored()[0]["messages"][-1]
    assert stored["reasoning"], "the template opens <think> in the prompt, so the output is reasoning"
    assert stored["reasoningTokens"] == int(match.group(1))
    # the reasoning is never mixed into the answer (which stays empty unless the noise happened to close </think>)
    answer_text = answer.locator(".msg-body").text_content() or ""
    assert stored["reasoning"].strip() not in answer_text
    if not stored["content"]:
        assert answer_text == ""
    thinking.locator("summary").click()
    expect(thinking.locator(".thinking-body")).to_be_visible()
    assert thinking.locator(".thinking-body").text_content() == stored["reasoning"]


def test_reasoning_alias_field_and_usage_token_count(tab: Callable[..., Tab]) -> None:
    """Servers started with --reasoning-field reasoning send ``reasoning``; usage gives the exact token count."""
    chat = tab().chat()
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
             "completion_tokens_details": {"reasoning_tokens": 7}}  # fmt: skip
    stub_reply(
        chat.page,
        sse({"reasoning": "Let me "}, {"reasoning": "think."}, {"content": "The **answer**."},
            tail=({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": SMOL, "choices": [],
                   "usage": usage},)),
    )  # fmt: skip
    chat.ask("Question?")
    answer = chat.wait_reply()
    summary = answer.locator("details.thinking summary")
    expect(summary).to_have_text(re.compile(r"^Thinking · 7 tokens · [\d.]+ s$"))
    expect(answer.locator(".msg-body")).to_have_text("The answer.")
    expect(answer.locator(".msg-body strong")).to_have_text("answer")
    expect(answer.locator(".thinking-body")).to_have_text("Let me think.")


# ------------------------------------------------------------------------------------------------- untrusted output

XSS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '<svg onload="window.__xss=3"><circle r="1"/></svg>',
    '<iframe srcdoc="<script>parent.__xss=4</script>"></iframe>',
    "[click](javascript:window.__xss=5)",
    "[click](JaVaScRiPt:window.__xss=6)",
    "![img](javascript:window.__xss=7)",
    '<a href="javascript:window.__xss=8">x</a>',
    "[x](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX194c3M9OTwvc2NyaXB0Pg==)",
    '```html\n<img src=x onerror="window.__xss=10">\n```',
    "`<img src=x onerror=window.__xss=11>`",
    '| a | b |\n|---|---|\n| <img src=x onerror="window.__xss=12"> | <script>window.__xss=13</script> |',
    '<details open ontoggle="window.__xss=14">x</details>',
    "**<img src=x onerror=window.__xss=15>**",
    '[ok](https://example.org/"onmouseover="window.__xss=16)',
    "- <body onload=window.__xss=17>\n  > <object data=javascript:window.__xss=18>",
    "![pixel](http://127.0.0.1:9/pixel.png)",
    "<style>body{display:none}</style><link rel=stylesheet href=http://127.0.0.1:9/x.css>",
]
ALLOWED_TAGS = {
    "P", "H1", "H2", "H3", "H4", "H5", "H6", "STRONG", "EM", "DEL", "CODE", "PRE", "A", "UL", "OL", "LI",
    "BLOCKQUOTE", "HR", "BR", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "DIV", "SPAN", "BUTTON",
}  # fmt: skip
INSPECT = """(root) => [...root.querySelectorAll('*')].map(e => ({
  tag: e.tagName,
  attrs: [...e.attributes].map(a => [a.name, a.value]),
}))"""


def _check_inert(elements: list[dict[str, Any]]) -> None:
    for element in elements:
        assert element["tag"] in ALLOWED_TAGS, element
        for name, value in element["attrs"]:
            assert not name.startswith("on"), element
            assert name in {
                "class",
                "href",
                "rel",
                "target",
                "title",
                "type",
                "aria-label",
                "data-lang",
                "start",
            }
            if name == "href":
                assert re.match(r"^(https?:|mailto:)", value), element


def test_markdown_renderer_never_runs_model_html(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat()
    rendered = chat.page.evaluate(
        """async (samples) => {
          const { renderMarkdown } = await import('./markdown.js');
          const root = document.createElement('div');
          root.id = 'xss-root';
          document.body.appendChild(root);
          for (const s of samples) root.appendChild(renderMarkdown(s));
          await new Promise(r => setTimeout(r, 500));  // give any onerror/onload a chance to fire
          return { text: root.textContent, xss: window.__xss ?? null };
        }""",
        XSS,
    )
    assert rendered["xss"] is None
    _check_inert(chat.page.evaluate(INSPECT, chat.page.locator("#xss-root").element_handle()))
    for visible in ("onerror", "<script>", "<svg onload", "<style>"):
        assert visible in rendered["text"], f"{visible!r} should be shown as text"
    assert not any(":9/" in u for u in t.requests), "an image or stylesheet in a reply must not be fetched"


def test_a_malicious_reply_does_nothing_live_or_after_reload(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat()
    reply = "\n\n".join(XSS)
    # split the reply into small deltas so tags arrive in pieces, as tokens do
    stub_reply(chat.page, sse(*({"content": reply[i : i + 7]} for i in range(0, len(reply), 7))))
    chat.ask("Show me some HTML.")
    answer = chat.wait_reply()
    assert chat.page.evaluate("() => window.__xss ?? null") is None
    _check_inert(chat.page.evaluate(INSPECT, answer.locator(".msg-body").element_handle()))
    assert chat.stored()[0]["messages"][-1]["content"] == reply

    chat.page.unroute("**/v1/chat/completions")
    chat.page.reload()
    expect(chat.answers).to_have_count(1)
    chat.page.wait_for_timeout(500)
    assert chat.page.evaluate("() => window.__xss ?? null") is None
    _check_inert(chat.page.evaluate(INSPECT, chat.answers.last.locator(".msg-body").element_handle()))
    assert not any(":9/" in u for u in t.requests)


MARKDOWN_CASES = [
    ("# Title", "<h1>Title</h1>"),
    (
        "**b** and *i* and `c` and ~~s~~",
        "<p><strong>b</strong> and <em>i</em> and <code>c</code> and <del>s</del></p>",
    ),
    ("snake_case_name and 2 * 3 * 4", "<p>snake_case_name and 2 * 3 * 4</p>"),
    ("line one\nline two", "<p>line one<br>line two</p>"),
    ("- a\n- b\n  - c", "<ul><li>a</li><li>b<ul><li>c</li></ul></li></ul>"),
    ("3. x\n4. y", '<ol start="3"><li>x</li><li>y</li></ol>'),
    ("> quoted", "<blockquote><p>quoted</p></blockquote>"),
    ("a\n\n---\n\nb", "<p>a</p><hr><p>b</p>"),
    (
        "[site](https://example.org/a_b)",
        '<p><a href="https://example.org/a_b" rel="noopener noreferrer nofollow" target="_blank">site</a></p>',
    ),
    (
        "| h | n |\n|:--|--:|\n| x | 1 |",
        '<div class="table-wrap"><table><thead><tr><th class="align-left">h</th><th class="align-right">n</th></tr>'
        '</thead><tbody><tr><td class="align-left">x</td><td class="align-right">1</td></tr></tbody></table></div>',
    ),
    (
        "```py\nprint('<b>')\n```",
        '<div class="code-block"><div class="code-head"><span class="code-lang">py</span><button class="copy-code" '
        'type="button" aria-label="Copy py code">Copy</button></div><pre><code data-lang="py">print(\'&lt;b&gt;\')'
        "</code></pre></div>",
    ),
    ("```\nstill streaming", None),  # an unclosed fence is a code block up to the end
]


def test_markdown_renders_the_common_constructs(tab: Callable[..., Tab]) -> None:
    chat = tab().chat()
    html = chat.page.evaluate(
        """async (samples) => {
          const { renderMarkdown } = await import('./markdown.js');
          return samples.map(s => { const d = document.createElement('div'); d.appendChild(renderMarkdown(s));
                                    return d.innerHTML; });
        }""",
        [source for source, _ in MARKDOWN_CASES],
    )
    for (source, want), got in zip(MARKDOWN_CASES, html, strict=True):
        if want is None:
            assert "<pre><code>still streaming</code></pre>" in got, got
        else:
            assert got == want, source


def test_markdown_rendering_stays_fast_on_long_and_hostile_input(tab: Callable[..., Tab]) -> None:
    """The answer is re-rendered while it streams: rendering must stay near-linear, also on hostile input."""
    chat = tab().chat()
    timings = chat.page.evaluate(
        """async () => {
          const { renderMarkdown } = await import('./markdown.js');
          const block = "## Part\\n\\nSome **bold**, `code`, [a link](https://example.org), snake_case.\\n\\n"
            + "- one\\n- *two*\\n  - nested\\n\\n```py\\nprint(1)\\n```\\n\\n| a | b |\\n|---|---|\\n| 1 | 2 |\\n\\n";
          const cases = {
            prose: block.repeat(Math.ceil(30000 / block.length)),
            brackets: "[".repeat(10000), images: "![".repeat(5000), stars: "**a ".repeat(5000),
            underscores: "_a ".repeat(5000), backticks: "`a ".repeat(5000), mixed: "*_`[~".repeat(3000),
            indents: Array.from({length: 500}, (_, i) => " ".repeat(i) + "- x").join("\\n"),
            quotes: "> ".repeat(3000) + "x", heading: "# " + " ".repeat(20000) + "x",
          };
          const out = {};
          for (const [name, text] of Object.entries(cases)) {
            const t = performance.now();
            document.createElement('div').appendChild(renderMarkdown(text));
            out[name] = performance.now() - t;
          }
          return out;
        }"""
    )
    slow = {name: round(ms) for name, ms in timings.items() if ms > 1500}
    assert not slow, f"rendering took too long (ms): {slow}"


def test_code_blocks_have_a_copy_button(tab: Callable[..., Tab]) -> None:
    t = tab(permissions=["clipboard-read", "clipboard-write"])
    chat = t.chat()
    stub_reply(chat.page, sse({"content": "Run:\n\n```bash\nkaiyuan serve --port 8080\n```\n"}))
    chat.ask("How do I start it?")
    answer = chat.wait_reply()
    button = answer.get_by_role("button", name="Copy bash code")
    button.click()
    expect(button).to_have_text("Copied")
    assert chat.page.evaluate("() => navigator.clipboard.readText()") == "kaiyuan serve --port 8080"


def test_sse_parser_handles_split_chunks_crlf_and_unicode(tab: Callable[..., Tab]) -> None:
    chat = tab().chat()
    events = chat.page.evaluate(
        """async () => {
          const { readEvents } = await import('./api.js');
          const text = ': comment\\r\\ndata: {"a":"开源"}\\r\\n\\r\\ndata: one\\ndata: two\\n\\nevent: x\\ndata: [DONE]\\n\\n';
          const bytes = new TextEncoder().encode(text);
          const stream = new ReadableStream({ start(c) {
            for (let i = 0; i < bytes.length; i += 3) c.enqueue(bytes.slice(i, i + 3));  // cuts UTF-8 and CRLF
            c.close();
          }});
          const out = [];
          for await (const e of readEvents(stream)) out.push(e);
          return out;
        }"""
    )
    assert events == ['{"a":"开源"}', "one\ntwo", "[DONE]"]


# ------------------------------------------------------------------------------------------------- errors and keys


def test_server_errors_are_readable_messages(tab: Callable[..., Tab]) -> None:
    chat = tab().chat()
    # a prompt far beyond the 1024-token context: the real server's 400
    chat.settings(max_tokens="16")
    chat.message.fill("lorem ipsum dolor " * 800)
    chat.message.press("Enter")
    error = chat.wait_reply().locator(".msg-error")
    expect(error).to_contain_text("too long for the model's context window")

    # a full queue, as the server reports it (429 + Retry-After + OpenAI envelope)
    envelope = {"error": {"message": "queue full", "type": "overloaded", "param": None, "code": "queue_full"}}
    stub_reply(chat.page, json.dumps(envelope), status=429, headers={"Retry-After": "7"})
    chat.page.get_by_role("button", name="Regenerate").click()
    error = chat.wait_reply().locator(".msg-error")
    expect(error).to_contain_text("The server is busy")
    expect(error).to_contain_text("Try again in 7 s")
    expect(error).to_contain_text("queue full")


def test_an_error_inside_the_stream_keeps_the_partial_answer(tab: Callable[..., Tab]) -> None:
    chat = tab().chat()
    error = {
        "error": {"message": "decode failed", "type": "server_error", "param": None, "code": "engine_error"}
    }
    stub_reply(chat.page, sse({"content": "Half an ans"}, tail=(error,)))
    chat.ask("Go")
    answer = chat.wait_reply()
    expect(answer.locator(".msg-body")).to_have_text("Half an ans")
    expect(answer.locator(".msg-error")).to_have_text(
        "The reply broke off with a server error. The server said: decode failed"
    )
    expect(chat.page.get_by_role("button", name="Regenerate")).to_be_enabled()


def test_api_key_is_asked_for_and_used(tab: Callable[..., Tab], keyed_server: Server) -> None:
    t = tab(keyed_server)
    chat = ChatPage(t.page, keyed_server.url)
    t.page.goto(keyed_server.url)
    notice = t.page.locator("#notice").filter(has_text="needs an API key")
    expect(notice).to_be_visible()
    expect(chat.model).to_be_disabled()
    t.page.get_by_role("button", name="Enter API key").click()
    dialog = t.page.get_by_role("dialog", name="Settings")
    expect(dialog.get_by_label("API key")).to_be_focused()
    dialog.get_by_label("API key").fill("sesame")
    dialog.get_by_label("Max tokens").fill("4")
    dialog.get_by_role("button", name="Save").click()
    expect(chat.model).to_be_enabled()
    expect(notice).to_be_hidden()
    chat.ask("Hi")
    answer = chat.wait_reply()
    expect(answer.locator(".msg-error")).to_have_count(0)

    # the server answers a chat with 401 (its key changed): the reply says what to do
    envelope = {
        "error": {"message": "invalid API key", "type": "authentication_error", "param": None, "code": None}
    }
    stub_reply(t.page, json.dumps(envelope), status=401)
    chat.ask("Hi again")
    expect(chat.wait_reply().locator(".msg-error")).to_contain_text("needs an API key")
    t.page.unroute("**/v1/chat/completions")

    # a wrong key: the model list is refused and the notice comes back
    chat.settings(api_key="wrong")
    expect(notice).to_be_visible()
    expect(chat.model).to_be_disabled()


# ------------------------------------------------------------------------------------------------- conversations


def test_conversations_survive_reload_and_can_be_renamed_exported_deleted(
    tab: Callable[..., Tab], tmp_path: Path
) -> None:
    t = tab()
    chat = t.chat()
    chat.settings(max_tokens="8")
    chat.ask("First conversation")
    chat.wait_reply()
    t.page.get_by_role("button", name="New chat").click()
    expect(chat.questions).to_have_count(0)
    chat.ask("Second conversation")
    chat.wait_reply()
    expect(chat.conversations).to_have_text(["Second conversation", "First conversation"])

    t.page.reload()
    expect(chat.conversations).to_have_text(["Second conversation", "First conversation"])
    expect(chat.question_texts).to_have_text(["Second conversation"])  # the latest one is open
    chat.conversations.nth(1).click()
    expect(chat.question_texts).to_have_text(["First conversation"])
    expect(chat.answers).to_have_count(1)

    t.page.get_by_role("button", name="Rename First conversation").click()
    title = t.page.get_by_role("textbox", name="Conversation title")
    title.fill("Renamed chat")
    title.press("Enter")
    t.page.reload()
    expect(chat.conversations).to_have_text(["Second conversation", "Renamed chat"])

    with t.page.expect_download() as info:
        t.page.get_by_role("button", name="Export all").click()
    exported = json.loads(Path(info.value.path()).read_text())
    assert exported["format"] == "kaiyuan-chat-export"
    titles = [c["title"] for c in exported["conversations"]]
    assert titles == ["Second conversation", "Renamed chat"]
    assert [m["role"] for m in exported["conversations"][1]["messages"]] == ["user", "assistant"]

    t.page.get_by_role("button", name="Delete Renamed chat").click()
    t.page.get_by_role("button", name="Confirm delete Renamed chat").click()
    expect(chat.conversations).to_have_text(["Second conversation"])
    t.page.reload()
    expect(chat.conversations).to_have_text(["Second conversation"])


def test_cut_off_answers_are_marked_and_other_tabs_follow(tab: Callable[..., Tab]) -> None:
    t = tab()
    chat = t.chat()
    other = ChatPage(t.context.new_page(), t.base_url).open()  # same browser profile, second tab
    expect(other.conversations).to_have_count(0)
    stub_reply(chat.page, sse({"content": "One, two, th"}, finish="length"))
    chat.ask("Count to ten.")
    note = chat.wait_reply().locator(".msg-note")
    expect(note).to_have_text("Cut off at Max tokens.")
    expect(other.conversations).to_have_text(["Count to ten."])  # the storage event reached the other tab
    chat.page.reload()
    expect(chat.answers.last.locator(".msg-note")).to_have_text("Cut off at Max tokens.")


# ------------------------------------------------------------------------------------------------- phone and looks


def test_phone_width_is_usable(tab: Callable[..., Tab]) -> None:
    t = tab(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    chat = t.chat()
    assert t.page.evaluate("() => document.documentElement.scrollWidth") <= 390
    sidebar = t.page.get_by_role("complementary", name="Conversations")
    expect(sidebar).to_be_hidden()
    chat.settings(max_tokens="8")
    chat.ask("Hi from a phone")
    chat.wait_reply()
    assert t.page.evaluate("() => document.documentElement.scrollWidth") <= 390
    t.page.get_by_role("button", name="Show conversations").click()
    expect(sidebar).to_be_visible()
    expect(chat.conversations.first).to_be_focused()
    t.page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    t.page.get_by_role("button", name="Show conversations").click()
    expect(chat.conversations).to_have_text(["Hi from a phone"])
    chat.conversations.first.click()
    expect(sidebar).to_be_hidden()


def test_light_and_dark_follow_the_system(tab: Callable[..., Tab]) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = tab(color_scheme=scheme).chat().page
        colours[scheme] = page.evaluate(
            "() => [getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"
        )
    assert colours["light"] == ["rgb(255, 255, 255)", "rgb(28, 33, 39)"]
    assert colours["dark"] == ["rgb(21, 23, 26)", "rgb(229, 232, 235)"]


def test_screenshots_desktop_and_phone(tab: Callable[..., Tab], tmp_path: Path) -> None:
    """Screenshots of a real exchange with SmolLM2; set UPDATE_SCREENSHOTS=1 to refresh docs/screenshots/."""
    shots = {}
    for name, viewport in (
        ("desktop", {"width": 1280, "height": 800}),
        ("phone", {"width": 390, "height": 844}),
    ):
        t = tab(viewport=viewport, is_mobile=name == "phone")
        chat = t.chat()
        chat.settings(temperature="0", max_tokens="200")
        if name == "desktop":
            chat.ask("Give me three short tips for writing clear Python code, as a numbered list.")
            chat.wait_reply()
            t.page.get_by_role("button", name="New chat").click()
            chat.ask("Write a Python function that reverses a string, and explain it in one sentence.")
        else:
            chat.ask("What is the capital of France? Answer in one sentence.")
        chat.wait_reply()
        t.page.evaluate("() => document.getElementById('messages').scrollTo(0, 0)")
        shots[name] = tmp_path / f"{name}.png"
        t.page.screenshot(path=str(shots[name]))
        assert t.page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]
    for path in shots.values():
        assert path.stat().st_size > 10_000  # a blank page compresses to far less
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, path in shots.items():
            shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
