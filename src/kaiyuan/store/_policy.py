"""The one place the store asks the license policy (``[policy]`` in kaiyuan.toml) whether it may add a model.

Owns: the call into ``kaiyuan.license.enforce_policy`` (imported lazily: the license package is only needed when a
model is added). Must not know: what the policy means; the license package decides and raises ``LicenseDenied``.
"""

from __future__ import annotations

import importlib
from typing import Any

from kaiyuan.store._manifest import Manifest

__all__ = ["_check_policy", "policy_model"]


def policy_model(manifest: Manifest) -> dict[str, Any]:
    """The manifest-shaped dict the license package judges (``name`` is the full ``name:tag``)."""
    model = manifest.to_dict()
    model["name"] = manifest.full_name
    return model


def _check_policy(manifest: Manifest, settings_policy: dict[str, Any], action: str = "import") -> None:
    """Raise LicenseDenied when the policy forbids ``action`` (import | pull | ...) for ``manifest``."""
    license_package = importlib.import_module("kaiyuan.license")
    enforce = getattr(license_package, "enforce_policy", None)
    if enforce is None:  # the license package predates policies: nothing to enforce
        return
    enforce(policy_model(manifest), settings_policy, action)
