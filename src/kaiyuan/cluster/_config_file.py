"""``kaiyuan serve --replicas N --print-config``: the Serve config file (``serve deploy`` / ``serve run`` YAML,
also the ``serveConfigV2`` of a KubeRay RayService) for the same application on an operator's own cluster.

The application is ``kaiyuan.cluster:build_app`` with the models and settings as ``args``; the deployments'
options (replicas or autoscaling bounds, CPUs, queue bound, health checks, router) are written out too, so an
operator can change them in the file. Secrets (API key, hub token) are never written: set them as
``KAIYUAN_API_KEY`` / ``KAIYUAN_HF_TOKEN`` in the cluster's environment. Must not start Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from kaiyuan.cluster._app import APP_NAME, replica_options, settings_args
from kaiyuan.config import Settings

__all__ = ["serve_config"]


def serve_config(settings: Settings, models: Sequence[str]) -> str:
    """The Serve config file as YAML text."""
    replica = replica_options(settings)
    config: dict[str, Any] = {
        "proxy_location": "HeadOnly",
        "http_options": {"host": settings.host, "port": settings.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "kaiyuan.cluster:build_app",
                "args": {"models": list(models), "settings": settings_args(settings)},
                "deployments": [
                    replica,
                    {"name": "KaiyuanIngress", "ray_actor_options": {"num_cpus": 0}},
                ],
            }
        ],
    }
    header = (
        "# kaiyuan on Ray Serve: serve deploy THIS_FILE (or serve run THIS_FILE; KubeRay: spec.serveConfigV2).\n"
        "# Every node needs kaiyuan installed (pip install 'kaiyuan[ray]') and the models in KAIYUAN_HOME or on a\n"
        "# shared path; set KAIYUAN_API_KEY in the cluster's environment to require a key.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)
