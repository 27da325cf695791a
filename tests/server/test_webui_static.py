"""The web chat's static files: served at ``/`` by ``create_app``, self-contained, and free of unsafe DOM calls.

These checks need no browser; ``test_webui_browser.py`` drives the page itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.server._app import STATIC_DIR
from tests.server._support import get, run

# What the page loads: the HTML, its module graph, the stylesheet and the icon.
ASSETS = {
    "app.js": "javascript",
    "api.js": "javascript",
    "markdown.js": "javascript",
    "store.js": "javascript",
    "tools.js": "javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# XML namespace names are identifiers, never fetched.
ALLOWED_URLS = {"http://www.w3.org/2000/svg"}


def _static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


def test_static_folder_holds_exactly_the_page_and_its_assets() -> None:
    names = {p.relative_to(STATIC_DIR).as_posix() for p in _static_files()}
    assert names == {"index.html", *ASSETS}


def test_index_and_every_asset_are_served_at_root(fake_server: Callable[..., tuple[Any, Any]]) -> None:
    app, _ = fake_server()
    page = run(get(app, "/"))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js"></script>' in page.text
    for name, kind in ASSETS.items():
        response = run(get(app, f"/{name}"))
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], (name, response.headers["content-type"])
        assert response.content == (STATIC_DIR / name).read_bytes()


def test_page_stays_open_when_the_api_needs_a_key(fake_server: Callable[..., tuple[Any, Any]]) -> None:
    """The chat must load without the key: it is where the user types it in."""
    app, _ = fake_server(settings={"api_key": "sekrit"})
    assert run(get(app, "/")).status_code == 200
    assert run(get(app, "/app.js")).status_code == 200
    assert run(get(app, "/v1/models")).status_code == 401


def test_module_imports_resolve_to_shipped_files() -> None:
    for path in STATIC_DIR.glob("*.js"):
        for target in re.findall(r'^\s*(?:import|export)\b[^;]*?from\s+"([^"]+)"', path.read_text(), re.M):
            assert target.startswith("./"), (
                f"{path.name} imports {target}: only relative imports of shipped files"
            )
            assert (STATIC_DIR / target[2:]).is_file(), f"{path.name} imports missing {target}"


@pytest.mark.parametrize("path", _static_files(), ids=lambda p: p.name)
def test_no_request_can_leave_the_machine(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    urls = set(re.findall(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s"'`)<>]*""", text)) - ALLOWED_URLS
    assert not urls, f"{path.name} names outside URLs: {sorted(urls)}"
    assert "@import" not in text and "url(" not in text, f"{path.name} loads a resource from CSS"


def test_content_security_policy_limits_the_page_to_its_own_server() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    match = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert match, "index.html must carry a Content-Security-Policy"
    policy = dict(
        (part.split()[0], part.split()[1:]) for part in (p.strip() for p in match.group(1).split(";")) if part
    )
    for directive in ("default-src", "script-src", "style-src", "connect-src"):
        assert policy[directive] == ["'self'"], directive
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert "<script>" not in html and "style=" not in html, (
        "inline script or style would need 'unsafe-inline'"
    )


@pytest.mark.parametrize("path", sorted(STATIC_DIR.glob("*.js")), ids=lambda p: p.name)
def test_scripts_never_parse_strings_as_html_or_code(path: Path) -> None:
    code = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.M)  # comments may name what is avoided
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "srcdoc",
    ):
        assert sink not in code, f"{path.name} uses {sink}"


def test_package_data_ships_the_static_folder() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"server/static/**/*"' in pyproject
