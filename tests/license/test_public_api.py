"""The license package's public surface: a sorted __all__ whose names all exist."""

from __future__ import annotations

import kaiyuan.license as package


def test_all_is_sorted_and_complete() -> None:
    assert package.__all__ == sorted(package.__all__)
    for name in package.__all__:
        assert hasattr(package, name), name
    assert {"enforce_policy", "license_summary", "evaluate", "detect_from_path", "derive_terms"} <= set(
        package.__all__
    )
