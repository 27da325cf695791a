"""PrefixAffinityRouter: Ray Serve's request router for kaiyuan's model replicas.

Policy, per request (``choose_replicas`` returns ranks; Ray's base class then takes, within the first rank that
has room, the replica with the fewest requests in flight, probing queue lengths when its cache has none):

1. A generation whose prompt shares at least ``min_prefix_tokens`` leading tokens with a prompt recently sent to
   a live replica, or is the very same prompt (the ``n`` choices of one call), goes to that replica first — its
   prefix cache holds those tokens, so it skips their prefill — unless that replica has ``max_imbalance`` more
   requests in flight than the least busy one, or has all its ``slots`` busy while another has one free (a
   request queued behind a whole answer loses more than its prefill saves).
2. Otherwise the replica with the fewest requests in flight (ties broken at random), the others as the fallback
   rank.

Requests in flight are the router's queue-length cache (Ray counts a request when it is sent and when it ends)
plus the requests this router has chosen a replica for but not yet sent (``on_send_request`` moves them into the
cache): a burst of requests is routed before any is sent, and from the cache alone 16 at once could be split 9/7
over two 8-slot replicas, the ninth waiting a whole answer for a slot while the other replica had one free.

``policy="round_robin"`` (``kaiyuan serve --routing round_robin``) takes the replicas in turn instead: the baseline
the benchmark compares prefix affinity with.

Compared with Ray's own ``ray.serve.llm.request_router.PrefixCacheAffinityRouter`` (read before writing this):
that one matches prompt *text* in a prefix tree held by a detached actor and calls it with a blocking
``ray.get`` on every routing decision. kaiyuan already has the token ids the replica will see, so this router
matches token blocks (``PrefixTable``) in its own memory: no extra actor, no round trip, no text normalisation.
The cost is that routers do not share their tables; kaiyuan runs one front per application, so there is one.

Counts what it did (``routed``: by prefix / by load) and registers itself (``_registry``) so the front's
``/metrics`` can read those counts and the replicas' own figures (``RunningReplica.routing_stats``, which Ray
refreshes from each replica's ``record_routing_stats``). Ray pickles this module by value: it holds no
module-level state, and imports what it shares at run time. Must not know HTTP or engines.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, OrderedDict
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from kaiyuan.cluster._prefix_table import PrefixTable

__all__ = ["PrefixAffinityRouter", "ReplicaView"]

_MAX_EXACT = 10_000  # prompts remembered whole (and requests awaiting their routing callback)


class ReplicaView:
    """What the front knows of one replica: its id and the figures it last reported."""

    def __init__(self, replica_id: str, stats: dict[str, Any], in_flight: int | None) -> None:
        self.replica_id = replica_id
        self.stats = stats
        self.in_flight = in_flight


class PrefixAffinityRouter(RequestRouter):
    """Prefix-affinity first, fewest requests in flight otherwise (see the module docstring)."""

    def initialize_state(
        self,
        block_tokens: int = 64,
        min_prefix_tokens: int = 256,
        max_imbalance: int = 4,
        max_blocks: int = 200_000,
        policy: str = "prefix",
        slots: int = 0,
        **_: Any,
    ) -> None:
        self._policy = (
            policy  # "prefix", or "round_robin" (the baseline: kaiyuan serve --routing round_robin)
        )
        self._turn = 0
        self._table = PrefixTable(block_tokens=block_tokens, max_blocks=max_blocks)
        self._min_prefix = max(min_prefix_tokens, block_tokens)
        self._max_imbalance = max_imbalance
        self._slots = slots  # sequences each replica decodes at once (kaiyuan serve --parallel); 0: unknown
        # request id -> (replica chosen, chosen for its prefix), from choose_replicas until the request is routed
        self._chosen: dict[str, tuple[ReplicaID, bool]] = {}
        # requests chosen for each replica and not yet sent to it (``on_send_request`` hands them to Ray's cache)
        self._unsent: Counter[ReplicaID] = Counter()
        self._exact: OrderedDict[int, ReplicaID] = OrderedDict()
        self._lock = threading.Lock()
        self.routed: Counter[str] = Counter()  # "prefix" | "load" -> requests
        self.lost: set[str] = set()  # replica ids seen dying
        from kaiyuan.cluster._registry import add_router

        add_router(self)

    # -- policy ------------------------------------------------------------------------------------
    def _in_flight(self, replica: RunningReplica) -> int:
        known = self._replica_queue_len_cache.get(replica.replica_id)
        return (0 if known is None else int(known)) + self._unsent[replica.replica_id]

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        target = _target_of(pending_request)
        if target is not None:  # an UnloadCall: its own replica, wherever it stands in the queues
            return [[r for r in candidate_replicas if r.replica_id.unique_id == target]]
        call = _call_of(pending_request)
        if call is None or not candidate_replicas:
            return [candidate_replicas]
        if self._policy == "round_robin":
            ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
            self._turn += 1
            first = ordered[self._turn % len(ordered)]
            return [[first], [r for r in ordered if r is not first]]
        assert pending_request is not None
        request_id = pending_request.metadata.internal_request_id
        by_id = {r.replica_id: r for r in candidate_replicas}
        exact = hash((call.model, tuple(call.prompt)))
        with self._lock:
            load = {r.replica_id: self._in_flight(r) for r in candidate_replicas}
            owner: Any = self._exact.get(exact)
            if owner not in by_id:
                owner, tokens = self._table.match(call.model, call.prompt, by_id.keys())
                if tokens < self._min_prefix:
                    owner = None
        fewest = min(load.values())
        least = random.choice([r for r in candidate_replicas if load[r.replica_id] == fewest])
        preferred = least
        if owner is not None and self._affinity_pays(load[owner], fewest):
            preferred = by_id[owner]
        with self._lock:
            # The same prompt again (the n choices of one call, a retry) goes where it went: its cache is there,
            # and the choices batch together as on one server. Decided here, not when routed, so that the
            # choices submitted together see it.
            self._exact[exact] = preferred.replica_id
            self._exact.move_to_end(exact)
            if len(self._exact) > _MAX_EXACT:
                self._exact.popitem(last=False)
            if len(self._chosen) > _MAX_EXACT:  # requests cancelled before routing never come back
                self._chosen.clear()
                self._unsent.clear()
            self._chosen[request_id] = (preferred.replica_id, preferred.replica_id == owner)
            self._unsent[preferred.replica_id] += 1
        others = [r for r in candidate_replicas if r.replica_id != preferred.replica_id]
        return [[preferred], others] if others else [[preferred]]

    def _affinity_pays(self, owner_load: int, fewest: int) -> bool:
        """Whether a request should go to the replica holding its prefix, given that replica's requests in flight
        and the fewest any replica has."""
        if owner_load - fewest > self._max_imbalance:
            return False
        return not (self._slots and owner_load >= self._slots > fewest)

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)  # Ray's cache counts it from now on
        with self._lock:
            if self._unsent[replica_id] > 0:
                self._unsent[replica_id] -= 1

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        call = _call_of(pending_request)
        if call is None:
            return
        with self._lock:
            intended, by_prefix = self._chosen.pop(
                pending_request.metadata.internal_request_id, (None, False)
            )
            policy = "round_robin" if self._policy == "round_robin" else "load"
            self.routed["prefix" if by_prefix and intended == replica_id else policy] += 1
            self._table.record(call.model, call.prompt, replica_id)

    # -- replica set -------------------------------------------------------------------------------
    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        with self._lock:
            self._table.forget(replica_id)
            self.lost.add(replica_id.unique_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = set(self.curr_replicas)
        super().update_replicas(replicas)
        gone = before - set(self.curr_replicas)
        with self._lock:
            for replica_id in gone:
                self._table.forget(replica_id)

    # -- what the front reads ----------------------------------------------------------------------
    def replica_views(self) -> list[ReplicaView]:
        """The live replicas with the figures each last reported (``record_routing_stats``)."""
        views = []
        for replica_id, replica in list(self.curr_replicas.items()):
            known = self._replica_queue_len_cache.get(replica_id)
            views.append(ReplicaView(replica_id.unique_id, dict(replica.routing_stats or {}), known))
        return views


def _first_arg(pending_request: PendingRequest | None) -> Any:
    return pending_request.args[0] if pending_request is not None and pending_request.args else None


def _call_of(pending_request: PendingRequest | None) -> Any:
    """The ``ReplicaCall`` a pending request carries, or None for other methods (``ready``)."""
    call = _first_arg(pending_request)
    return call if hasattr(call, "prompt") and hasattr(call, "model") else None


def _target_of(pending_request: PendingRequest | None) -> str | None:
    """The replica an ``UnloadCall`` names, or None for every other call."""
    target = getattr(_first_arg(pending_request), "replica", None)  # a ReplicaCall has none
    return target if isinstance(target, str) else None
