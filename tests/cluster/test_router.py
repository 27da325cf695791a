"""PrefixAffinityRouter's choices, without a cluster: a burst is spread evenly, and a replica whose prefix cache
holds a prompt gets it only while it has a free slot (or none has)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("ray.serve")

from kaiyuan.cluster._router import PrefixAffinityRouter


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
    router._use_replica_queue_len_cache = False  # Ray's own bookkeeping in on_send_request: the fake above
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
    chosen = []
    for n in range(16):
        chosen.append(choose(router, replicas, pending(n, [n + 1000, 7, 8])))
        counts[chosen[-1]] += 1
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    for replica_id in chosen:  # sent: from now on Ray's queue-length cache counts them, not the router
        router.on_send_request(replica_id)  # type: ignore[arg-type]
    assert sum(router._unsent.values()) == 0


def test_the_prefix_owner_gets_the_request_only_while_it_has_a_free_slot() -> None:
    router, replicas, cache = make_router(slots=8)
    a, b = (replica.replica_id for replica in replicas)

    def route(n: int, system: int, known: dict[FakeId, int]) -> FakeId:
        """Choose for request ``n`` (a 600-token prefix numbered ``system``; the router's threshold is 256
        tokens) with Ray's cache at ``known``, then send it as Ray does."""
        cache.known = known
        request = pending(n, [*range(system * 1000, system * 1000 + 600), n])
        replica_id = choose(router, replicas, request)
        router.on_send_request(replica_id)  # type: ignore[arg-type]
        router.on_request_routed(request, replica_id, None)  # type: ignore[arg-type]
        return replica_id

    def first_and_other(system: int) -> tuple[FakeId, FakeId]:
        owner = route(system * 10, system, {})
        return owner, b if owner == a else a

    owner, other = first_and_other(1)
    assert route(11, 1, {owner: 7, other: 5}) == owner  # a free slot left on the owner: the prefix wins
    assert (
        route(12, 1, {owner: 8, other: 5}) == other
    )  # the owner is full, the other has room: queueing costs more
    owner, other = first_and_other(2)
    assert route(21, 2, {owner: 9, other: 8}) == owner  # both full: the prefix wins
    owner, other = first_and_other(3)
    assert route(31, 3, {owner: 4, other: 0}) == owner  # 4 more in flight is within the imbalance allowed
    assert route(32, 3, {owner: 5, other: 0}) == other
    assert router.routed["prefix"] == 3 and router.routed["load"] == 5


def test_an_unload_call_goes_to_the_replica_it_names() -> None:
    from kaiyuan.cluster._calls import UnloadCall

    router, replicas, _ = make_router()
    for name in ("a", "b"):
        request = FakePending([UnloadCall("digest", name)], FakeMetadata(f"unload-{name}"))
        ranks = asyncio.run(router.choose_replicas(replicas, request))  # type: ignore[arg-type]
        assert [[r.replica_id.unique_id for r in rank] for rank in ranks] == [[name]]
    gone = FakePending([UnloadCall("digest", "c")], FakeMetadata("unload-c"))  # died since: no replica at all
    assert asyncio.run(router.choose_replicas(replicas, gone)) == [[]]  # type: ignore[arg-type]
