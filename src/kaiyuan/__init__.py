"""kaiyuan (开源): run, serve, fine-tune, export and govern open-weight LLMs on your own hardware."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kaiyuan")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
