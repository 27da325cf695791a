"""PrefixTable: the bookkeeping behind prefix-affinity routing (which replica holds which prompt prefix)."""

from __future__ import annotations

import pytest

from kaiyuan.cluster import PrefixTable

SYSTEM = list(range(1000, 1300))  # a 300-token shared prefix


def test_the_replica_that_got_a_prompt_holds_its_full_blocks() -> None:
    table = PrefixTable(block_tokens=64)
    table.record("m", [*SYSTEM, 1, 2, 3], "a")
    replica, tokens = table.match("m", [*SYSTEM, 9, 9, 9, 9], {"a", "b"})
    assert (replica, tokens) == ("a", 256)  # four full blocks of 64 are shared; the fifth differs


def test_a_different_prefix_or_model_matches_nothing() -> None:
    table = PrefixTable(block_tokens=64)
    table.record("m", SYSTEM, "a")
    assert table.match("m", [7, *SYSTEM], {"a"}) == (None, 0)
    assert table.match("other-model", SYSTEM, {"a"}) == (None, 0)
    assert table.match("m", SYSTEM[:63], {"a"}) == (None, 0)  # less than one block is never matched


def test_only_candidates_count_and_forgotten_replicas_hold_nothing() -> None:
    table = PrefixTable(block_tokens=64)
    table.record("m", SYSTEM, "a")
    assert table.match("m", SYSTEM, {"b"}) == (None, 0)  # "a" is not among the live replicas
    table.forget("a")
    assert len(table) == 0 and table.match("m", SYSTEM, {"a"}) == (None, 0)


def test_the_newest_owner_wins_and_the_longest_prefix_decides() -> None:
    table = PrefixTable(block_tokens=64)
    table.record("m", SYSTEM[:128], "a")
    table.record("m", SYSTEM, "b")
    assert table.match("m", SYSTEM, {"a", "b"}) == ("b", 256)


def test_it_stays_bounded() -> None:
    table = PrefixTable(block_tokens=4, max_blocks=10)
    for i in range(50):
        table.record("m", [i] * 40, f"r{i}")
    assert len(table) == 10
    assert table.match("m", [49] * 40, {"r49"}) == ("r49", 40)  # the newest survive
    with pytest.raises(ValueError):
        PrefixTable(block_tokens=0)
