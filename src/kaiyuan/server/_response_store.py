"""Stored responses of the Responses API: one SQLite file, ``$KAIYUAN_HOME/responses.sqlite3``.

Owns the rows and their bounds: each stored response keeps its ``response`` object, its own input items (for
``GET /v1/responses/{id}/input_items``) and the conversation it continues (the items the model saw before this
request, so that ``previous_response_id`` needs one row, also after older rows were evicted). Writes evict rows
older than ``max_age_days`` and the oldest beyond ``max_stored`` (both from kaiyuan.toml). Responses that were
still running when a server stopped are marked failed when the next one opens the store.

Stores JSON values (dicts and lists) and knows nothing of their meaning beyond ``status`` and ``output``.
Calls block (SQLite); the routes run them in a thread. Must not know HTTP or the chat layer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.errors import StoreError

__all__ = ["ResponseStore", "StoredResponse"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    context TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""


@dataclass
class StoredResponse:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    context: list[dict[str, Any]]  # the items before this request's input (the continued conversation)

    @property
    def conversation(self) -> list[dict[str, Any]]:
        """What a response continuing this one sees before its own input: context, input, output."""
        return [*self.context, *self.input_items, *self.response.get("output", [])]


class ResponseStore:
    """Responses in one SQLite file, bounded by count and age."""

    def __init__(self, path: Path, *, max_stored: int, max_age_days: float) -> None:
        self.path = path
        self.max_stored = max_stored
        self.max_age_s = max_age_days * 86400.0
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executescript(_SCHEMA)
                self._fail_unfinished(db)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the response store {path}: {exc}; check the folder's permissions"
            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    def _fail_unfinished(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT id, response FROM responses").fetchall()
        for row_id, text in rows:
            response = json.loads(text)
            if response.get("status") in ("queued", "in_progress"):
                response["status"] = "failed"
                response["error"] = {
                    "code": "server_error",
                    "message": "the server stopped before it finished",
                }
                db.execute("UPDATE responses SET response = ? WHERE id = ?", (json.dumps(response), row_id))

    def put(
        self,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        context: list[dict[str, Any]],
    ) -> None:
        """Insert or replace ``response`` (keyed by its ``id``), then evict what the bounds exclude."""
        now = time.time()
        row = (response["id"], now, json.dumps(response), json.dumps(input_items), json.dumps(context))
        with self._lock, self._connect() as db:
            existing = db.execute(
                "SELECT created_at FROM responses WHERE id = ?", (response["id"],)
            ).fetchone()
            if existing is not None:
                row = (row[0], existing[0], *row[2:])
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)
            db.execute("DELETE FROM responses WHERE created_at < ?", (now - self.max_age_s,))
            db.execute(
                "DELETE FROM responses WHERE id NOT IN "
                "(SELECT id FROM responses ORDER BY created_at DESC LIMIT ?)",
                (self.max_stored,),
            )

    def update(self, response: dict[str, Any]) -> None:
        """Replace the ``response`` object of a stored row (a background response finishing)."""
        with self._lock, self._connect() as db:
            db.execute(
                "UPDATE responses SET response = ? WHERE id = ?", (json.dumps(response), response["id"])
            )

    def get(self, response_id: str) -> StoredResponse | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT response, input_items, context FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]), json.loads(row[2]))

    def delete(self, response_id: str) -> bool:
        with self._lock, self._connect() as db:
            return db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
