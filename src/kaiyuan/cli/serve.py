"""``kaiyuan serve`` (start the OpenAI- and Ollama-compatible server) and ``kaiyuan ps`` (ask it what it holds).

Owns the command-line face of the server: flags → ``Settings``, preloading the named models (the bundled
SmolLM2 when none is named), binding the socket first so a busy port is a one-line error, running uvicorn in
this process, and printing where to point clients. ``ps`` asks a running server over HTTP (``/kaiyuan/ps``).
Must not know routes or engines beyond ``kaiyuan.server``'s public names.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import time
from typing import Any

import click

from kaiyuan.config import Settings, load_settings
from kaiyuan.errors import ConfigError, KaiyuanError, MissingExtra

__all__ = ["ps_command", "serve_command"]

DEFAULT_MODEL = "smollm2"


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv6 when ``host`` has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use (another kaiyuan serve?); choose another with --port"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host/--port") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("localhost" if host == "::" else host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kaiyuan").setLevel(settings.log_level.upper())


@click.command("serve")
@click.argument("models", nargs=-1)
@click.option(
    "--host", default=None, help="Address to bind (default 127.0.0.1; 0.0.0.0 opens it to the network)."
)
@click.option("--port", type=int, default=None, help="TCP port (default 8080).")
@click.option(
    "--parallel",
    type=int,
    default=None,
    help="Sequence slots per model: requests decoded together (default 4).",
)
@click.option("--ctx", type=int, default=None, help="Context window of each slot, tokens (default 4096).")
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: CPU cores).")
@click.option(
    "--max-queue", type=int, default=None, help="Requests waiting per model before 503 (default 64)."
)
@click.option(
    "--max-loaded",
    type=int,
    default=None,
    help="Model files kept in memory (a base and its adapter models count once); least recently used "
    "unload (default 1).",
)
@click.option(
    "--api-key", default=None, help="Require 'Authorization: Bearer KEY' on the API (or KAIYUAN_API_KEY)."
)
@click.option(
    "--flash-attn",
    type=click.Choice(["auto", "on", "off"]),
    default=None,
    help=(
        "llama.cpp flash attention. auto (default): on the CPU, both are measured at load and the faster kept; "
        "with GPU layers, llama.cpp chooses."
    ),
)
@click.option(
    "--reasoning-field",
    type=click.Choice(["reasoning_content", "reasoning"]),
    default=None,
    help="Name of the thinking field in OpenAI responses (default reasoning_content).",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Allow browser requests from this origin (repeatable).",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "llama.cpp", "vllm"]),
    default=None,
    help="Engine per model: auto (default) serves GGUF files on llama.cpp and Hugging Face folders on vLLM.",
)
@click.option(
    "--gpu-layers",
    type=int,
    default=None,
    help="llama.cpp: layers offloaded to the GPU (default: all when llama.cpp has a GPU backend, else 0).",
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bfloat16", "float16", "float32"]),
    default=None,
    help="vLLM: weights and activations dtype (default auto).",
)
@click.option(
    "--gpu-memory-utilization",
    type=float,
    default=None,
    help="vLLM: share of GPU memory it may take, 0..1 (default 0.9).",
)
@click.option(
    "--tensor-parallel-size", type=int, default=None, help="vLLM: GPUs one model is split across (default 1)."
)
@click.option(
    "--pipeline-parallel-size",
    type=int,
    default=None,
    help="vLLM: pipeline stages across GPUs or nodes, through Ray (default 1).",
)
@click.option(
    "--max-model-len", type=int, default=None, help="vLLM: context window, tokens (default: --ctx)."
)
@click.option(
    "--kv-cache-gib",
    type=int,
    default=None,
    help="vLLM on CPU: KV cache size in GiB (default: vLLM's own, VLLM_CPU_KVCACHE_SPACE).",
)
@click.option(
    "--replicas",
    type=int,
    default=None,
    help="Serve N replicas of the model runtime on Ray Serve behind this endpoint (needs kaiyuan[ray]).",
)
@click.option("--min-replicas", type=int, default=None, help="Autoscaling lower bound (default: --replicas).")
@click.option("--max-replicas", type=int, default=None, help="Autoscaling upper bound (default: --replicas).")
@click.option(
    "--ray-address", default=None, help="Join this Ray cluster (host:port) instead of starting a local one."
)
@click.option(
    "--drain-timeout",
    type=int,
    default=None,
    help="With --replicas: seconds SIGTERM waits for requests in flight before stopping (default 30).",
)
@click.option(
    "--scale-up-delay",
    type=int,
    default=None,
    help="With --min-replicas/--max-replicas: seconds of high load before a replica is added (default 30).",
)
@click.option(
    "--scale-down-delay",
    type=int,
    default=None,
    help="With --min-replicas/--max-replicas: seconds of low load before a replica is removed (default 600).",
)
@click.option(
    "--routing",
    type=click.Choice(["prefix", "round_robin"]),
    default=None,
    help="With --replicas: prefix (a shared prompt prefix goes to the replica that caches it, else the least "
    "busy; default) or round_robin.",
)
@click.option(
    "--print-config",
    is_flag=True,
    help="With --replicas: print the Ray Serve config file (serve deploy / KubeRay) and exit.",
)
def serve_command(
    models: tuple[str, ...], cors_origins: tuple[str, ...], print_config: bool, **flags: Any
) -> None:
    """Serve models over the OpenAI API (/v1), the Ollama API (/api) and a web chat (/).

    MODEL names are loaded before the server starts (default: the bundled smollm2); any other model in the
    store loads on its first request.

    \b
    Examples:
      kaiyuan serve                         the bundled SmolLM2 on http://127.0.0.1:8080
      kaiyuan serve qwen3:0.6b --ctx 8192   another model with a longer context
      OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=none python my_app.py
    """
    import uvicorn

    from kaiyuan.server import Runtime, create_app

    settings = load_settings(cors_origins=list(cors_origins) or None, **flags)
    _configure_logging(settings)
    scale_out = bool(settings.replicas or settings.min_replicas or settings.max_replicas)
    cluster_module = _cluster() if scale_out or print_config else None
    if cluster_module is not None and print_config:
        click.echo(cluster_module.serve_config(settings, models or (DEFAULT_MODEL,)), nl=False)
        return
    sock = _bind(settings.host, settings.port)
    cluster = None
    if cluster_module is not None:
        click.echo("starting the replicas on Ray Serve …", err=True)
        try:
            cluster = cluster_module.ServeCluster(settings, models or (DEFAULT_MODEL,))
        except BaseException:
            sock.close()
            raise
        runtime = cluster.runtime
    else:
        runtime = Runtime.from_settings(settings)
    try:
        loaded = []
        for name in models or (DEFAULT_MODEL,):
            click.echo(f"loading {name} …", err=True)
            loaded.append(runtime.models.load_now(name))
    except BaseException:
        sock.close()
        runtime.close()
        if cluster is not None:
            cluster.close()
        raise
    url = _url(settings.host, settings.port)
    click.echo(f"kaiyuan serving {', '.join(loaded)} on {url}")
    for entry in runtime.models.describe():
        click.echo(f"  {entry['name']}: {entry.get('engine', '?')}")
    click.echo(f"  OpenAI API:  {url}/v1   (e.g. OPENAI_BASE_URL={url}/v1)")
    click.echo(f"  web chat:    {url}/     metrics: {url}/metrics")
    if settings.api_key:
        click.echo("  API key required: Authorization: Bearer <key>")
    app = create_app(runtime)
    config = uvicorn.Config(
        app if cluster is None else cluster.gate(app),
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    if cluster is None:
        uvicorn.Server(config).run(sockets=[sock])
        return
    click.echo(f"  replicas:    {cluster.describe()}")
    try:
        cluster.server(config).run(sockets=[sock])
    finally:
        cluster.close()


def _cluster() -> Any:
    """``kaiyuan.cluster``, or a one-line error naming the extra to install."""
    try:
        import kaiyuan.cluster as cluster_module
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "ray":
            raise MissingExtra("ray", feature="--replicas") from exc
        raise
    return cluster_module


@click.command("ps")
@click.option("--host", default=None, help="The server's address (default from settings, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="The server's port (default 8080).")
@click.option(
    "--api-key", default=None, help="The server's API key, if it requires one (or KAIYUAN_API_KEY)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
def ps_command(host: str | None, port: int | None, api_key: str | None, as_json: bool) -> None:
    """List the models a running kaiyuan server holds in memory."""
    import httpx

    settings = load_settings(host=host, port=port, api_key=api_key)
    url = _url(settings.host, settings.port)
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        resp = httpx.get(f"{url}/kaiyuan/ps", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise KaiyuanError(
            f"no kaiyuan server answers at {url} ({exc}); start one with: kaiyuan serve"
        ) from exc
    if resp.status_code == 401:
        raise KaiyuanError(f"the server at {url} wants an API key: pass --api-key or set KAIYUAN_API_KEY")
    if resp.status_code != 200:
        raise KaiyuanError(f"the server at {url} answered {resp.status_code}: {resp.text[:200]}")
    models = resp.json()["models"]
    if as_json:
        click.echo(json.dumps(models, indent=2))
        return
    if not models:
        click.echo("no models loaded")
        return
    from kaiyuan.cli.models import human_age, human_size

    rows = [["NAME", "SIZE", "CONTEXT", "BUSY", "WAITING", "LAST USED"]]
    for m in models:
        rows.append(
            [
                m["name"],
                human_size(m["size"]),
                str(m["context_length"]),
                f"{m['running']}/{m['slots']}",
                str(m["waiting"]),
                human_age(m["last_used"], time.time()),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("    ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
