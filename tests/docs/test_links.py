"""Every relative link and every repository file named in docs/ and README.md exists, so the docs cannot point at a
file that was renamed, moved or never added (a DESIGN.md, ``protocol/convert.py``, ``engine/fake.py`` …).

Checked: Markdown links ``[text](path)`` outside code that are not URLs or anchors (resolved against the page's folder, anchors
stripped), and code spans that name a repository path (``src/…``, ``tests/…``, ``docs/…``, ``benchmarks/…``,
``scripts/…`` or a top-level ``*.md``). A path with a wildcard or a placeholder (``<name>``, ``NAME``) is a pattern,
not a file, and is skipped."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_DOUBLE_CODE = re.compile(r"``.+?``")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_REPO_PATH = re.compile(r"^(?:src|tests|docs|benchmarks|scripts)/[\w./-]+$|^[A-Z][\w-]*\.md$")
_PATTERN = re.compile(r"[*?<>{}]|\b[A-Z]{2,}\b|\.\.\.|…")


_BARE_PAGE = re.compile(r"(?<![\w/.-])[A-Z][A-Z_-]+\.md\b")


def _page_named(page: Path, name: str) -> Path:
    """A page named without a path: beside the page, else at the repository root."""
    beside = page.parent / name
    return beside if beside.exists() else ROOT / name


def _targets(page: Path) -> list[tuple[str, Path]]:
    text = page.read_text(encoding="utf-8")
    prose = _CODE.sub(
        "", _DOUBLE_CODE.sub("", _FENCE.sub("", text))
    )  # links inside code are examples, not links
    found: list[tuple[str, Path]] = []
    for match in [*_LINK.finditer(prose), *_IMAGE.finditer(prose)]:
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto: …) or an anchor on the same page
        path = target.split("#", 1)[0]
        if path:
            found.append((target, (page.parent / path).resolve()))
    for match in _BARE_PAGE.finditer(prose):  # "see DESIGN.md": a page named in prose
        found.append((match.group(0), _page_named(page, match.group(0))))
    for match in _CODE.finditer(text):
        span = match.group(1).strip().rstrip(",.:;")
        if _REPO_PATH.match(span) and not _PATTERN.search(span.removesuffix(".md")):
            found.append((span, (ROOT / span).resolve()))
    return found


def _prose_of_code(path: Path) -> str:
    """The docstrings and comments of a Python file (where code cites documents)."""
    source = path.read_text(encoding="utf-8")
    parts = [
        ast.get_docstring(node) or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    parts += [tok.string for tok in tokens if tok.type == tokenize.COMMENT]
    return "\n".join(parts)


def test_code_cites_no_missing_page() -> None:
    """Docstrings and comments in src/ and tests/ that cite a page (``DESIGN.md``) cite one the repository has."""
    folders = [ROOT / "src", ROOT / "tests", ROOT / "docs", ROOT / "benchmarks"]
    have = {p.name for p in ROOT.glob("*.md")} | {p.name for f in folders for p in f.rglob("*.md")}
    missing = []
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        if path == Path(__file__).resolve():
            continue  # this file names missing pages on purpose
        for match in _BARE_PAGE.finditer(_prose_of_code(path)):
            if match.group(0) not in have:
                missing.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_named_file_exists(page: Path) -> None:
    missing = [shown for shown, path in _targets(page) if not path.exists()]
    assert missing == [], f"{page.relative_to(ROOT)} names files that do not exist: {missing}"


def test_the_checker_sees_links_and_paths(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [the design](DESIGN.md), [engine](engine.md#fake), [web](https://example.com), ![shot](x.png)\n"
        "and `src/kaiyuan/protocol/convert.py`, `tests/<area>/test_x.py`, `kaiyuan serve`.\n",
        encoding="utf-8",
    )
    shown = [s for s, _ in _targets(page)]
    assert shown == ["DESIGN.md", "engine.md#fake", "x.png", "DESIGN.md", "src/kaiyuan/protocol/convert.py"]
