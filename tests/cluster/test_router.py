"""PrefixAffinityRouter's choices, without a cluster: a burst is spread evenly, and a replica whose prefix cache
holds a prompt gets it only while it has a free slot (or none has)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("ray.serve")

from kaiyuan.cluster._router import PrefixAffinityRouter  # noqa: E402


@dataclass(frozen=True)
class FakeId:
    unique_id: str


@dataclass
class FakeReplica:
    replica_id: FakeId


@dataclass
class FakeCall:
    model: str
    prompt: list[int]


@dataclass
class FakeMetadata:
    internal_request_id: str


@dataclass
class FakePending:
    args: list[Any]
    metadata: FakeMetadata


@dataclass
class FakeQueueLengths:
    """Ray's queue-length cache: what each replica last reported plus the requests sent to it since."""

    known: dict[FakeId, int] = field(default_factory=dict)

    def get(self, replica_id: FakeId) -> int | None:
        return self.known.get(replica_id)


def make_router(*, slots: int = 8) -> tuple[PrefixAffinityRouter, list[FakeReplica], FakeQueueLengths]:
    router = PrefixAffinityRouter.__new__(PrefixAffinityRouter)  # its base needs a running Serve controller
    cache = FakeQueueLengths()
    router._replica_queue_len_cache = cache  # type: ignore[assignment]
    router.initialize_state(slots=slots)
    return router, [FakeReplica(FakeId("a")), FakeReplica(FakeId("b"))], cache


def pending(n: int, prompt: list[int]) -> FakePending:
    return FakePending([FakeCall("smollm2", prompt)], FakeMetadata(f"request-{n}"))


def choose(router: PrefixAffinityRouter, replicas: list[FakeReplica], request: FakePending) -> FakeId:
    ranks = asyncio.run(router.choose_replicas(replicas, request))  # type: ignore[arg-type]
    return ranks[0][0].replica_id


def test_a_burst_is_spread_evenly_before_any_request_is_sent() -> None:
    """16 short prompts arrive together; none has been sent yet, so Ray's cache knows nothing of them."""
    router, replicas, _ = make_router()
    counts = {replica.replica_id: 0 for replica in replicas}
    for n in range(16):
        counts[choose(router, replicas, pending(n, [n + 1000, 7, 8]))] += 1
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_the_prefix_owner_gets_the_request_only_while_it_has_a_free_slot() -> None:
    router, replicas, cache = make_router(slots=8)
    a, b = (replica.replica_id for replica in replicas)
    system = list(range(600))  # a long shared prefix (the router's threshold is 256 tokens)
    first = pending(0, [*system, 1])
    owner = choose(router, replicas, first)
    router.on_request_routed(first, owner, None)  # type: ignore[arg-type]
    other = b if owner == a else a

    cache.known = {owner: 7, other: 5}  # a free slot left on the owner: the prefix wins
    assert choose(router, replicas, pending(1, [*system, 2])) == owner
    router.on_request_routed(pending(1, []), owner, None)  # type: ignore[arg-type]

    cache.known = {owner: 8, other: 5}  # the owner is full and the other has room: queueing there costs more
    assert choose(router, replicas, pending(2, [*system, 3])) == other
    router.on_request_routed(pending(2, []), other, None)  # type: ignore[arg-type]

    cache.known = {owner: 9, other: 8}  # both full: the prefix wins again
    assert choose(router, replicas, pending(3, [*system, 4])) == owner
    assert router.routed["prefix"] == 1 and router.routed["load"] == 2
