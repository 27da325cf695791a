"""The web chat's MCP tools in a real browser (Debian's chromium via Playwright) against a real ``kaiyuan serve``:
the tools menu lists the servers kaiyuan.toml configures (by name only), a switched-on server's tools go to the
model through the Responses tool loop, and each call and its result show folded in the answer, live and after a
reload. The model is the bundled SmolLM2 on one llama.cpp thread; the MCP server is the tests' own
(tests/mcp/weather_server.py, over stdio)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.webui.harness import CHROMIUM, CHROMIUM_ARGS, Server, start_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

from tests.server.webui.chat_page import ChatPage  # noqa: E402

WEATHER = Path(__file__).parents[1] / "mcp" / "weather_server.py"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``kaiyuan serve`` (SmolLM2) with two MCP servers in kaiyuan.toml: ``weather`` and ``spare`` (the same
    test server twice, so the switches are per server)."""
    home = tmp_path_factory.mktemp("webui-tools-home")
    stdio = f"command = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(WEATHER))}]\n"
    # weather offers get_weather alone (a 135M model offered its flood tool too may pick that)
    only = 'env = { WEATHER_SERVER_ONLY = "get_weather" }\n'
    (home / "kaiyuan.toml").write_text(f"[mcp.servers.weather]\n{stdio}{only}[mcp.servers.spare]\n{stdio}")
    srv = start_server(home, tmp_path_factory.mktemp("webui-tools-log") / "serve.log", ctx=2048)
    yield srv
    srv.stop()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    yield page
    context.close()
    assert not problems, problems


def test_a_switched_on_server_is_called_and_the_call_shows_folded(page: Page, server: Server) -> None:
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data or "{}"))
            if r.method == "POST" and r.url.endswith("/v1/responses")
            else None
        ),
    )
    chat = ChatPage(page, server.url).open("smollm2:135m")
    chat.settings(temperature="0", max_tokens="96")

    tools = page.get_by_role("button", name="Tools")
    expect(tools).to_be_visible()
    tools.click()
    menu = page.get_by_role("group", name="MCP tools")
    expect(menu).to_be_visible()
    expect(menu.get_by_role("switch")).to_have_count(2)
    menu.get_by_role("switch", name="weather").check()
    # SmolLM2-135M answers from its own head when it may: the first step must be a tool call
    menu.get_by_role("checkbox", name="Call a tool before answering").check()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(tools).to_have_text("Tools · 1 on")

    chat.ask("What is the weather in Paris?")
    # the loop runs to its end before anything arrives: meanwhile the answer says what it waits for
    expect(chat.answers.last.locator(".tools-pending")).to_have_text("Working with tools (weather)…")
    answer = chat.wait_reply()
    expect(answer.locator(".tools-pending")).to_have_count(0)
    expect(answer.locator(".msg-error")).to_have_count(0)
    call = answer.locator("details.tool-call").first
    expect(call.locator("summary")).to_have_text("Tool call · weather.get_weather")
    expect(call).not_to_have_attribute("open", "")  # folded, like the thinking
    assert not call.locator(".tool-call-result").is_visible()
    call.locator("summary").click()
    expect(call.locator(".tool-call-result")).to_have_text("The weather in Paris is sunny, 25C.")
    assert json.loads(call.locator(".tool-call-args").inner_text()) == {"city": "Paris"}
    # the call comes before the answer, and the answer is there
    expect(answer.locator(".tool-calls + .msg-body")).to_have_count(1)
    assert answer.locator(".msg-body").inner_text().strip()

    # the browser named the server by its label only, and the switched-off one not at all
    (body,) = sent
    assert body["tools"] == [{"type": "mcp", "server_label": "weather", "require_approval": "never"}]
    assert body["tool_choice"] == "required" and body["stream"] is True and body["store"] is False
    assert body["input"] == [{"role": "user", "content": "What is the weather in Paris?"}]
    assert str(WEATHER) not in json.dumps(body) and sys.executable not in json.dumps(body)

    # kept with the conversation: after a reload the call still shows, and the next turn sends it back
    stored = chat.stored()[0]["messages"][-1]["tools"]
    assert stored[0]["name"] == "get_weather" and stored[0]["output"] == "The weather in Paris is sunny, 25C."
    page.reload()
    expect(chat.model).to_be_enabled(timeout=30_000)
    expect(chat.answers.last.locator("details.tool-call summary").first).to_have_text(
        "Tool call · weather.get_weather"
    )
    expect(page.get_by_role("button", name="Tools")).to_have_text("Tools · 1 on")
    chat.ask("And in Rome?")
    second = chat.wait_reply()
    expect(second.locator(".msg-error")).to_have_count(0)
    expect(second.locator("details.tool-call summary").first).to_have_text("Tool call · weather.get_weather")
    kinds = [item.get("type", item.get("role")) for item in sent[1]["input"]]
    assert kinds[:2] == ["user", "mcp_call"] and kinds[-1] == "user"
    assert sent[1]["input"][1]["output"] == "The weather in Paris is sunny, 25C."


def test_switched_off_tools_use_chat_completions(page: Page, server: Server) -> None:
    chat = ChatPage(page, server.url).open("smollm2:135m")
    chat.settings(max_tokens="8")
    paths: list[str] = []
    page.on("request", lambda r: paths.append(r.url.removeprefix(server.url)) if r.method == "POST" else None)
    expect(page.get_by_role("button", name="Tools")).to_have_text("Tools")  # a fresh browser: all off
    chat.ask("Say hi.")
    answer = chat.wait_reply()
    expect(answer.locator(".msg-error")).to_have_count(0)
    assert paths == ["v1/chat/completions"] and answer.locator("details.tool-call").count() == 0


def test_tools_menu_fits_a_phone(browser: Browser, server: Server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    page = context.new_page()
    try:
        ChatPage(page, server.url).open()
        page.get_by_role("button", name="Tools").click()
        menu = page.get_by_role("group", name="MCP tools")
        for control in (
            menu.get_by_role("switch", name="weather"),
            menu.get_by_role("checkbox", name="Call a tool before answering"),
        ):
            box = control.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        panel = menu.bounding_box()
        assert panel is not None and panel["x"] >= 0 and panel["x"] + panel["width"] <= 390, panel
        menu.get_by_role("switch", name="weather").tap()
        expect(page.get_by_role("button", name="Tools")).to_have_text("Tools · 1 on")
    finally:
        context.close()
