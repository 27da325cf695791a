"""The web chat's model info shows what kaiyuan eval measured: a badge with the cost against the source (or the
chat or perplexity figure) and every record in its tooltip, read from ``/v1/models`` (``evals``), in a real
browser against a real ``kaiyuan serve`` whose store holds a measured SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kaiyuan.eval import DEFAULT_CORPUS
from tests.server.webui.harness import CHROMIUM, CHROMIUM_ARGS, Server, run_kaiyuan, start_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
from playwright.sync_api import expect  # noqa: E402

from tests.server.webui.chat_page import ChatPage  # noqa: E402

SMOL = "smollm2:135m"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("webui-eval-home")
    text = home / "short.txt"
    text.write_text(" ".join(DEFAULT_CORPUS.read_text(encoding="utf-8").split(" ")[:120]), encoding="utf-8")
    run_kaiyuan(home, "eval", "smollm2", "--against", SMOL, "--text", str(text), "--ctx", "64", timeout=300)
    srv = start_server(home, tmp_path_factory.mktemp("webui-eval-log") / "serve.log")
    yield srv
    srv.stop()


def test_the_model_info_shows_the_recorded_evaluation(server: Server) -> None:
    models = httpx.get(server.url.rstrip("/") + "/v1/models", timeout=60).json()
    (listed,) = [m for m in models["data"] if m["id"] == SMOL]
    (record,) = listed["evals"]
    assert record["kind"] == "against" and record["kl"]["mean"] == 0.0

    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            ChatPage(page, server.url).open(SMOL)
            badge = page.locator("#model-badges .badge-eval")
            expect(badge).to_have_text(f"KL 0.0000 vs {SMOL}")
            title = badge.get_attribute("title") or ""
            assert title.startswith("Measured by kaiyuan eval:")
            assert f"cost vs {SMOL}: mean KL 0.0000, top-1 100.0%, PPL ratio 1.0000 on short.txt" in title
            assert not problems, problems
        finally:
            browser.close()
