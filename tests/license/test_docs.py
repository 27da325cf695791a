"""docs/licenses.md stays true: its catalog table is the catalog, its JSON example has the report's keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kaiyuan.license import derivative, evaluate, get_catalog

DOC = Path(__file__).resolve().parents[2] / "docs" / "licenses.md"


def catalog_table() -> str:
    rows = [
        "| id | name | commercial use | MAU limit | attribution | name prefix | territory excluded | flows to outputs | OSI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in get_catalog().licenses.values():
        t = e.terms
        rows.append(
            f"| `{e.id}` | [{e.name}]({e.url}) | {t.commercial_use}{' (research only)' if t.research_only else ''} | "
            f"{f'{t.mau_limit:,}' if t.mau_limit else '—'} | {', '.join(t.attribution) or '—'} | "
            f"{t.name_prefix or '—'} | {', '.join(t.territory_excluded) or '—'} | "
            f"{'yes' if t.flows_to_outputs else 'no'} | {'yes' if t.osi_approved else 'no'} |"
        )
    return "\n".join(rows) + "\n"


def test_catalog_table_in_the_docs_is_current() -> None:
    assert catalog_table() in DOC.read_text(encoding="utf-8"), "regenerate the table in docs/licenses.md"


def test_json_example_has_the_keys_of_a_real_report() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = json.loads(re.search(r"```json\n(.*?)```", text, re.S).group(1))  # type: ignore[union-attr]
    real = evaluate(
        derivative("my-llama-adapter", [{"repo_url": "meta-llama/Llama-3.1-8B-Instruct"}], "adapter")
    ).to_json()
    assert set(example) == set(real)
    for key in ("license", "terms", "effective", "openness"):
        assert set(example[key]) == set(real[key]), key
    assert set(example["lineage"][0]) == set(real["lineage"][0])
    assert example["schema"] == real["schema"]
    assert example["catalog_version"] == get_catalog().version
