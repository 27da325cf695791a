"""The one exception tree of kaiyuan.

Every error kaiyuan raises on purpose is a ``KaiyuanError``. Foreign exceptions (llama.cpp, jinja2, torch,
httpx) are wrapped once, at the boundary where they happen, with ``raise ... from exc``. The CLI maps this tree
to exit codes and the server maps it to HTTP statuses, each through one table (``cli/_errors.py`` and
``server/_errors.py``), using the ``http_status`` and ``exit_code`` class attributes below.

    KaiyuanError
    ├── ConfigError                 bad kaiyuan.toml / flag / environment value
    ├── InvalidRequest              bad input from a user or client (400)
    │   ├── ContextOverflow         prompt (plus max_tokens) longer than the context window
    │   ├── UnsupportedFeature      a valid request kaiyuan cannot honour (e.g. an image part, a schema keyword)
    │   └── InvalidDataset          a fine-tuning data file with bad lines
    ├── AuthenticationError         missing or wrong API key (401)
    ├── LicenseDenied               the license policy forbids this model or derivative (403)
    ├── ModelNotFound               no such model in the store (404)
    ├── ModelExists                 a name already taken where overwriting was not asked for (409)
    ├── ResponseNotFound            no stored response with that id (Responses API; 404)
    ├── McpError                    a configured MCP server cannot be reached or listed (424)
    ├── InvalidModelFile            a GGUF (or other model file) that is truncated, lying or not a model
    ├── TemplateError               a chat template that fails to render or tries to escape the sandbox
    ├── Overloaded                  queue full; try again later (429/503 with Retry-After)
    ├── EngineError                 llama.cpp (or another backend) failed to load or decode
    ├── StoreError                  the model store on disk is inconsistent or cannot be written
    ├── PullError                   a hub download failed (network, 404, digest mismatch)
    │   └── DigestMismatch          downloaded bytes do not match the announced digest
    ├── TuneError                   fine-tuning failed
    ├── ExportError                 export / merge / quantize failed
    └── MissingExtra                an optional extra is not installed (tells the pip command)
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ContextOverflow",
    "DigestMismatch",
    "EngineError",
    "ExportError",
    "InvalidDataset",
    "InvalidModelFile",
    "InvalidRequest",
    "KaiyuanError",
    "LicenseDenied",
    "McpError",
    "MissingExtra",
    "ModelExists",
    "ModelNotFound",
    "Overloaded",
    "PullError",
    "ResponseNotFound",
    "StoreError",
    "TemplateError",
    "TuneError",
    "UnsupportedFeature",
]


class KaiyuanError(Exception):
    """Base of every error kaiyuan raises on purpose.

    ``http_status`` and ``exit_code`` are read by the server's and the CLI's mapping tables; ``code`` is the
    short machine-readable code put in OpenAI error envelopes.
    """

    http_status: int = 500
    exit_code: int = 1
    code: str = "internal_error"
    error_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(KaiyuanError):
    http_status = 500
    exit_code = 2
    code = "config_error"


class InvalidRequest(KaiyuanError):
    http_status = 400
    exit_code = 2
    code = "invalid_request"
    error_type = "invalid_request_error"


class ContextOverflow(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(
        self, message: str, *, prompt_tokens: int = 0, context_length: int = 0, param: str | None = "messages"
    ) -> None:
        super().__init__(message, param=param)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class UnsupportedFeature(InvalidRequest):
    code = "unsupported"


class InvalidDataset(InvalidRequest):
    code = "invalid_dataset"


class AuthenticationError(KaiyuanError):
    http_status = 401
    exit_code = 1
    code = "invalid_api_key"
    error_type = "authentication_error"


class LicenseDenied(KaiyuanError):
    http_status = 403
    exit_code = 1
    code = "license_denied"
    error_type = "permission_error"

    def __init__(self, message: str, *, reasons: list[str] | None = None, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.reasons = list(reasons or [])


class ModelNotFound(KaiyuanError):
    http_status = 404
    exit_code = 1
    code = "model_not_found"
    error_type = "invalid_request_error"

    def __init__(
        self, message: str, *, suggestions: list[str] | None = None, param: str | None = "model"
    ) -> None:
        super().__init__(message, param=param)
        self.suggestions = list(suggestions or [])


class ModelExists(KaiyuanError):
    http_status = 409
    exit_code = 1
    code = "model_exists"
    error_type = "invalid_request_error"


class ResponseNotFound(KaiyuanError):
    http_status = 404
    exit_code = 1
    code = "not_found"
    error_type = "invalid_request_error"


class McpError(KaiyuanError):
    http_status = 424
    exit_code = 1
    code = "mcp_error"
    error_type = "server_error"


class InvalidModelFile(KaiyuanError):
    http_status = 400
    exit_code = 1
    code = "invalid_model_file"
    error_type = "invalid_request_error"


class TemplateError(KaiyuanError):
    http_status = 400
    exit_code = 1
    code = "template_error"
    error_type = "invalid_request_error"


class Overloaded(KaiyuanError):
    http_status = 503
    exit_code = 1
    code = "overloaded"
    error_type = "server_error"

    def __init__(self, message: str, *, retry_after: float = 1.0, http_status: int = 503) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.http_status = http_status


class EngineError(KaiyuanError):
    http_status = 500
    code = "engine_error"


class StoreError(KaiyuanError):
    http_status = 500
    code = "store_error"


class PullError(KaiyuanError):
    http_status = 502
    code = "pull_failed"


class DigestMismatch(PullError):
    code = "digest_mismatch"


class TuneError(KaiyuanError):
    code = "tune_failed"


class ExportError(KaiyuanError):
    code = "export_failed"


class MissingExtra(KaiyuanError):
    http_status = 501
    exit_code = 1
    code = "missing_extra"

    def __init__(self, extra: str, *, feature: str = "") -> None:
        what = f"{feature} needs" if feature else "this needs"
        super().__init__(f"{what} the '{extra}' extra: pip install 'kaiyuan[{extra}]'")
        self.extra = extra
