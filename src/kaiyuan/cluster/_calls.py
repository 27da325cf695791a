"""What travels between the front and a model replica: a ``ReplicaCall`` in, batches of ``TokenEvent`` and one
``StreamEnd`` out; an ``UnloadCall`` when the front stops serving a model file. Plain dataclasses, pickled by Ray.

Errors cross as ``(class name, message)`` and come back as the same ``kaiyuan.errors`` class (so a replica's
``Overloaded`` is still a 503 at the front); anything else becomes ``EngineError``. Owns no behaviour beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaiyuan import errors
from kaiyuan.engine import GenerationRequest
from kaiyuan.store import Manifest

__all__ = ["ReplicaCall", "StreamEnd", "UnloadCall"]


@dataclass
class ReplicaCall:
    """One generation for a replica: which model file (``manifest``, bare: no adapters of its own) and the
    engine-level request, prompt already tokenized by the front."""

    model: str  # key of the engine on the replica: the model file's digest
    manifest: Manifest
    request: GenerationRequest

    @property
    def prompt(self) -> list[int]:
        """The prompt token ids (what the router matches prefixes on)."""
        return self.request.prompt


@dataclass
class UnloadCall:
    """Close the engine of one model file on one replica (``replica``: its Ray Serve id, which the router routes
    to): the front no longer serves any model of that file (``keep_alive: 0``, ``/api/delete``, its own limit)."""

    model: str  # key of the engine on the replica: the model file's digest
    replica: str


@dataclass
class StreamEnd:
    """The last item of a replica's stream: why it ended, the cached prompt tokens, and the error if any."""

    finish_reason: str
    cached_tokens: int = 0
    error_type: str | None = None
    error_message: str | None = None

    @classmethod
    def failed(cls, exc: BaseException, finish_reason: str = "stop") -> StreamEnd:
        return cls(finish_reason, error_type=type(exc).__name__, error_message=str(exc))

    def error(self) -> errors.KaiyuanError | None:
        """The replica's error as a kaiyuan error of the same class, or None."""
        if self.error_type is None:
            return None
        return rebuild_error(self.error_type, self.error_message or "")


def rebuild_error(type_name: str, message: str) -> errors.KaiyuanError:
    """``kaiyuan.errors.<type_name>(message)`` when such a class exists, else ``EngineError(message)``."""
    kind = getattr(errors, type_name, None)
    if isinstance(kind, type) and issubclass(kind, errors.KaiyuanError):
        try:
            return kind(message)
        except TypeError:  # a class that needs more than a message
            pass
    return errors.EngineError(message)
