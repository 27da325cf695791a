"""kaiyuan on Ray Serve: model replicas (each its own engines, slots and prefix cache) behind kaiyuan's one HTTP
surface, with prefix-affinity routing, health checks and restarts by Ray, autoscaling bounds and graceful drain.

Layer: beside ``server`` (it builds the server's ``Runtime`` with a replica-backed engine and calls
``create_app``); imported only by ``kaiyuan serve --replicas`` / ``--print-config`` and by Ray itself. Importing
it imports Ray (``pip install 'kaiyuan[ray]'``). docs/scale-out.md is the user's guide.
"""

from kaiyuan.cluster._app import APP_NAME, KaiyuanIngress, build_app, replica_deployment
from kaiyuan.cluster._config_file import serve_config
from kaiyuan.cluster._launch import ServeCluster
from kaiyuan.cluster._prefix_table import PrefixTable
from kaiyuan.cluster._replica import ModelReplica
from kaiyuan.cluster._router import PrefixAffinityRouter

__all__ = [
    "APP_NAME",
    "KaiyuanIngress",
    "ModelReplica",
    "PrefixAffinityRouter",
    "PrefixTable",
    "ServeCluster",
    "build_app",
    "replica_deployment",
    "serve_config",
]
