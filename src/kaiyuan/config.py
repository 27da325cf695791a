"""Settings: defaults < ``$KAIYUAN_HOME/kaiyuan.toml`` < ``KAIYUAN_*`` environment < CLI flags.

This is the only module that reads ``KAIYUAN_*`` environment variables. Everything else receives a
``Settings`` object (or values taken from it). The ``[policy]`` table of kaiyuan.toml is handed through as a raw
dict (``Settings.policy``); the license package owns its meaning.

Environment variables (each maps to the field of the same name):

    KAIYUAN_HOME            home folder (models, adapters, runs, kaiyuan.toml); default ~/.kaiyuan
    KAIYUAN_HOST            server bind address; default 127.0.0.1
    KAIYUAN_PORT            server port; default 8080
    KAIYUAN_API_KEY         bearer key the server requires; default none (no auth)
    KAIYUAN_THREADS         llama.cpp threads; default: number of CPU cores
    KAIYUAN_CTX             context window per sequence slot, tokens; default 4096
    KAIYUAN_PARALLEL        sequence slots per loaded model; default 4
    KAIYUAN_MAX_QUEUE       waiting requests per model before 429/503; default 64
    KAIYUAN_MAX_LOADED      models kept loaded (LRU beyond); default 1
    KAIYUAN_FLASH_ATTN      flash attention: auto | on | off; default auto (CPU: the faster, measured at load)
    KAIYUAN_CORS_ORIGINS    comma-separated allowed CORS origins; default none
    KAIYUAN_REASONING_FIELD reasoning_content | reasoning; default reasoning_content
    KAIYUAN_LOG_LEVEL       logging level; default WARNING
    KAIYUAN_RESPONSES_MAX_STORED    stored Responses-API responses kept (oldest evicted); default 10000
    KAIYUAN_RESPONSES_MAX_AGE_DAYS  days a stored response is kept; default 30
    KAIYUAN_REPLICAS        serve replicas on Ray Serve (kaiyuan serve --replicas); default none (one process)
    KAIYUAN_MIN_REPLICAS    autoscaling lower bound on Ray; default: the replica count
    KAIYUAN_MAX_REPLICAS    autoscaling upper bound on Ray; default: the replica count
    KAIYUAN_RAY_ADDRESS     Ray cluster to join (host:port); default none: start a local one
    KAIYUAN_DRAIN_TIMEOUT   seconds SIGTERM waits for in-flight requests to finish; default 30
    KAIYUAN_SCALE_DOWN_DELAY  seconds autoscaling waits, load being low, before removing a replica; default 600
    KAIYUAN_ROUTING         replicas: prefix (cache affinity, else least busy) | round_robin; default prefix
    KAIYUAN_ENGINE          auto | llama.cpp | vllm; default auto (HF folders on vLLM when installed, GGUF on llama.cpp)
    KAIYUAN_GPU_LAYERS      llama.cpp layers offloaded to the GPU; default: all when llama.cpp has a GPU backend, else 0
    KAIYUAN_DTYPE           vLLM dtype: auto | bfloat16 | float16 | float32; default auto
    KAIYUAN_GPU_MEMORY_UTILIZATION  share of GPU memory vLLM may take (0..1); default 0.9
    KAIYUAN_TENSOR_PARALLEL_SIZE    GPUs one vLLM model is split across; default 1
    KAIYUAN_PIPELINE_PARALLEL_SIZE  vLLM pipeline stages (GPUs or nodes, via Ray); default 1
    KAIYUAN_MAX_MODEL_LEN   vLLM context window (tokens); default: --ctx
    KAIYUAN_KV_CACHE_GIB    vLLM on CPU: KV cache size (GiB); default: vLLM's (VLLM_CPU_KVCACHE_SPACE)
    KAIYUAN_HF_ENDPOINT     Hugging Face endpoint (falls back to HF_ENDPOINT); default https://huggingface.co
    KAIYUAN_HF_TOKEN        Hugging Face access token for pulls (falls back to HF_TOKEN); default none
    KAIYUAN_MODELSCOPE_ENDPOINT  ModelScope endpoint; default https://www.modelscope.cn
    KAIYUAN_OLLAMA_REGISTRY Ollama registry; default https://registry.ollama.ai
    KAIYUAN_PULL_TIMEOUT    seconds a pull waits for a hub to connect or send more bytes; default 30
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaiyuan.errors import ConfigError

__all__ = ["Settings", "default_threads", "load_settings"]

_ENV_PREFIX = "KAIYUAN_"


def default_threads() -> int:
    """Physical-ish core count: llama.cpp is memory bound, more threads than cores only adds contention."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Settings:
    """Resolved settings. One commented line per field: meaning (unit)."""

    home: Path = field(default_factory=lambda: Path.home() / ".kaiyuan")  # data folder
    host: str = "127.0.0.1"  # server bind address
    port: int = 8080  # server TCP port
    api_key: str | None = None  # bearer key required by the server; None = no auth
    threads: int = field(default_factory=default_threads)  # llama.cpp threads (count)
    ctx: int = 4096  # context window per sequence slot (tokens)
    parallel: int = 4  # concurrent sequence slots per loaded model (count)
    max_queue: int = 64  # waiting requests per model before 429/503 (count)
    max_loaded: int = 1  # engines kept loaded (a base and its adapter models share one); LRU unloaded beyond
    flash_attn: str = "auto"  # llama.cpp flash attention: auto | on | off
    cors_origins: list[str] = field(default_factory=list)  # allowed CORS origins; empty = CORS off
    reasoning_field: str = "reasoning_content"  # name of the reasoning field in OpenAI responses
    log_level: str = "WARNING"  # logging level name
    responses_max_stored: int = 10000  # stored /v1/responses responses kept (count); the oldest are evicted
    responses_max_age_days: int = 30  # stored /v1/responses responses older than this are evicted (days)
    replicas: int | None = None  # replicas on Ray Serve; None = serve in this process, no Ray
    min_replicas: int | None = None  # autoscaling lower bound (count); None = replicas
    max_replicas: int | None = None  # autoscaling upper bound (count); None = replicas
    ray_address: str | None = None  # Ray cluster to join (host:port); None = start a local one
    drain_timeout: int = 30  # seconds SIGTERM waits for in-flight requests before stopping
    scale_up_delay: int = 30  # seconds of high load before autoscaling adds a replica (Ray Serve's default)
    scale_down_delay: int = (
        600  # seconds of low load before autoscaling removes a replica (Ray Serve's default)
    )
    routing: str = "prefix"  # replica choice: prefix (cache affinity, else least busy) | round_robin
    engine: str = "auto"  # auto | llama.cpp | vllm: which engine serves a model
    gpu_layers: int | None = (
        None  # llama.cpp layers on the GPU (count); None = all with a GPU backend, else 0
    )
    dtype: str = "auto"  # vLLM weights/activations dtype
    gpu_memory_utilization: float = 0.9  # share of GPU memory vLLM may take (0..1)
    tensor_parallel_size: int = 1  # GPUs one vLLM model is split across (count)
    pipeline_parallel_size: int = 1  # vLLM pipeline stages (count)
    max_model_len: int | None = None  # vLLM context window (tokens); None = ctx
    kv_cache_gib: int | None = None  # vLLM on CPU: KV cache (GiB); None = vLLM's default
    hf_endpoint: str = "https://huggingface.co"  # Hugging Face hub endpoint
    hf_token: str | None = field(
        default=None, repr=False
    )  # Hugging Face access token for pulls; None = anonymous
    modelscope_endpoint: str = "https://www.modelscope.cn"  # ModelScope hub endpoint
    ollama_registry: str = "https://registry.ollama.ai"  # Ollama registry endpoint
    pull_timeout: int = 30  # seconds a pull waits for a hub to connect or to send more bytes
    policy: dict[str, Any] = field(default_factory=dict)  # raw [policy] table of kaiyuan.toml
    models: dict[str, Any] = field(default_factory=dict)  # raw [models.<name>] tables (per-model settings)
    mcp: dict[str, Any] = field(default_factory=dict)  # raw [mcp] table: MCP servers (kaiyuan.mcp reads it)

    @property
    def config_file(self) -> Path:
        return self.home / "kaiyuan.toml"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def adapters_dir(self) -> Path:
        return self.home / "adapters"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    def replace(self, **changes: Any) -> Settings:
        """A copy with CLI flag values applied; ``None`` values mean "flag not given" and are skipped."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_FIELD_TYPES: dict[str, type] = {
    "host": str,
    "port": int,
    "api_key": str,
    "threads": int,
    "ctx": int,
    "parallel": int,
    "max_queue": int,
    "max_loaded": int,
    "flash_attn": str,
    "cors_origins": list,
    "reasoning_field": str,
    "log_level": str,
    "responses_max_stored": int,
    "responses_max_age_days": int,
    "replicas": int,
    "min_replicas": int,
    "max_replicas": int,
    "ray_address": str,
    "drain_timeout": int,
    "scale_up_delay": int,
    "scale_down_delay": int,
    "routing": str,
    "engine": str,
    "gpu_layers": int,
    "dtype": str,
    "gpu_memory_utilization": float,
    "tensor_parallel_size": int,
    "pipeline_parallel_size": int,
    "max_model_len": int,
    "kv_cache_gib": int,
    "hf_endpoint": str,
    "hf_token": str,
    "modelscope_endpoint": str,
    "ollama_registry": str,
    "pull_timeout": int,
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "flash_attn": ("auto", "on", "off"),
    "reasoning_field": ("reasoning_content", "reasoning"),
    "routing": ("prefix", "round_robin"),
    "engine": ("auto", "llama.cpp", "vllm"),
    "dtype": ("auto", "bfloat16", "float16", "float32"),
}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = _FIELD_TYPES[name]
    try:
        if kind is int:
            result: Any = int(value)
            if result < (0 if name in ("port", "gpu_layers") else 1):
                raise ValueError(value)
        elif kind is float:
            result = float(value)
            if not result > 0 or (name == "gpu_memory_utilization" and result > 1):
                raise ValueError(value)
        elif kind is list:
            result = (
                [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
            )
        else:
            result = str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {name} must be a positive {kind.__name__}, got {value!r}") from exc
    if name in _CHOICES and result not in _CHOICES[name]:
        raise ConfigError(f"{source}: {name} must be one of {', '.join(_CHOICES[name])}, got {value!r}")
    return result


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. Fix or remove the file.") from exc


def load_settings(env: dict[str, str] | None = None, **flags: Any) -> Settings:
    """Resolve settings from defaults, kaiyuan.toml, the environment and CLI ``flags`` (None = not given)."""
    env = dict(os.environ) if env is None else env
    home = Path(
        flags.pop("home", None) or env.get(_ENV_PREFIX + "HOME") or Path.home() / ".kaiyuan"
    ).expanduser()
    settings = Settings(home=home)
    values: dict[str, Any] = {}

    toml = _read_toml(home / "kaiyuan.toml")
    server_table = toml.get("server", {})
    for table, source in ((toml, "kaiyuan.toml"), (server_table, "kaiyuan.toml [server]")):
        if not isinstance(table, dict):
            raise ConfigError(f"{source} must be a table")
        for name in _FIELD_TYPES:
            if name in table:
                values[name] = _coerce(name, table[name], source)
    policy = toml.get("policy", {})
    models = toml.get("models", {})
    mcp = toml.get("mcp", {})
    if not isinstance(policy, dict) or not isinstance(models, dict) or not isinstance(mcp, dict):
        raise ConfigError("kaiyuan.toml: [policy], [models] and [mcp] must be tables")

    for name in _FIELD_TYPES:
        raw = env.get(_ENV_PREFIX + name.upper())
        if raw not in (None, ""):
            values[name] = _coerce(name, raw, f"environment {_ENV_PREFIX}{name.upper()}")
    if "hf_endpoint" not in values and env.get("HF_ENDPOINT"):
        values["hf_endpoint"] = env["HF_ENDPOINT"]
    if "hf_token" not in values and env.get("HF_TOKEN"):
        values["hf_token"] = env["HF_TOKEN"]

    for name, raw in flags.items():
        if raw is None:
            continue
        if name not in _FIELD_TYPES:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, raw, f"--{name.replace('_', '-')}")

    return dataclasses.replace(settings, policy=policy, models=models, mcp=mcp, **values)
