"""Packing and the micro-batch schedule: positions restart per packed example, attention ids separate them, and the
sequence of micro-batches is a pure function of the seed (what makes --resume see the same batches)."""

from __future__ import annotations

from kaiyuan.tune._batching import Schedule, pad_batch, rows_from_examples
from kaiyuan.tune._render import IGNORE_INDEX, TokenizedExample


def _example(n: int, start: int) -> TokenizedExample:
    ids = list(range(start, start + n))
    return TokenizedExample(input_ids=ids, labels=[IGNORE_INDEX, *ids[1:]], line=start)


def test_packing_fills_rows_without_crossing_examples() -> None:
    examples = [_example(n, 100 * i) for i, n in enumerate([5, 7, 3, 9, 4])]
    rows = rows_from_examples(examples, seq_len=12, packing=True, seed=0)
    assert all(len(r.input_ids) <= 12 for r in rows)
    assert sorted(t for r in rows for t in r.input_ids) == sorted(t for e in examples for t in e.input_ids)
    for row in rows:
        for doc in set(row.doc_ids):
            positions = [p for p, d in zip(row.position_ids, row.doc_ids, strict=True) if d == doc]
            assert positions == list(range(len(positions)))
    assert len(rows) < len(examples)


def test_packing_is_best_fit_so_rows_come_out_full() -> None:
    # in file order, greedy filling needs 4 rows of 10 here ([6], [5,4], [7,2], [3,...]); best fit needs 3 full ones
    lengths = [6, 5, 4, 7, 2, 3, 1, 2]
    examples = [_example(n, 100 * i) for i, n in enumerate(lengths)]
    rows = rows_from_examples(examples, seq_len=10, packing=True, seed=0)
    assert sorted(len(r.input_ids) for r in rows) == [10, 10, 10]
    assert sorted(rows_from_examples(examples, 10, packing=True, seed=1)[0].input_ids) == sorted(
        rows[0].input_ids
    )


def test_packing_ties_mix_by_seed_and_never_split_an_example() -> None:
    examples = [_example(4, 100 * i) for i in range(12)]
    by_seed = [rows_from_examples(examples, 8, packing=True, seed=s) for s in (0, 1)]
    for rows in by_seed:
        assert len(rows) == 6
        for row in rows:  # each example lies whole in one row
            assert {t // 100 for t in row.input_ids[:4]} != {t // 100 for t in row.input_ids[4:]}
    assert [r.input_ids for r in by_seed[0]] != [r.input_ids for r in by_seed[1]]
    assert [r.input_ids for r in by_seed[0]] == [
        r.input_ids for r in rows_from_examples(examples, 8, packing=True, seed=0)
    ]


def test_unpacked_rows_and_padding() -> None:
    rows = rows_from_examples([_example(3, 0), _example(5, 10)], seq_len=16, packing=False)
    batch = pad_batch(rows, pad_id=-7)
    assert batch.padded and batch.tokens == 8
    assert batch.input_ids[0] == [0, 1, 2, -7, -7]
    assert batch.labels[0][3:] == [IGNORE_INDEX, IGNORE_INDEX]
    assert batch.doc_ids[0] == [0, 0, 0, -1, -1]


def test_schedule_is_deterministic_and_covers_each_epoch() -> None:
    schedule = Schedule(n_rows=10, batch_size=3, seed=7)
    assert schedule.batches_per_epoch == 4
    epoch0 = [i for k in range(4) for i in schedule.micro_batch(k)]
    epoch1 = [i for k in range(4, 8) for i in schedule.micro_batch(k)]
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    assert Schedule(n_rows=10, batch_size=3, seed=7).micro_batch(5) == schedule.micro_batch(5)


def test_group_by_length_batches_similar_rows_and_still_covers_each_epoch() -> None:
    import random

    rng = random.Random(3)
    lengths = [int(rng.lognormvariate(4, 0.9)) + 1 for _ in range(400)]
    plain = Schedule(n_rows=400, batch_size=4, seed=1)
    grouped = Schedule(n_rows=400, batch_size=4, seed=1, lengths=lengths)

    def padded(schedule: Schedule, epoch: int) -> int:  # tokens computed, padding included
        batches = [schedule.micro_batch(epoch * 100 + k) for k in range(100)]
        assert sorted(i for b in batches for i in b) == list(range(400))  # every row once per epoch
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    for epoch in (0, 1):
        assert padded(grouped, epoch) < 0.75 * padded(plain, epoch)
    # the order is still shuffled (batch order differs between epochs) and a pure function of the seed (resume)
    assert grouped.micro_batch(0) != grouped.micro_batch(100)
    again = Schedule(n_rows=400, batch_size=4, seed=1, lengths=lengths)
    assert [again.micro_batch(k) for k in (150, 3)] == [grouped.micro_batch(k) for k in (150, 3)]


def test_runs_saved_before_group_by_length_resume_in_their_old_order() -> None:
    from kaiyuan.tune._config import TuneConfig

    saved = TuneConfig(base="smollm2", data="d.jsonl", name="n").to_dict()
    assert saved["group_by_length"] is True
    del saved["group_by_length"]
    assert TuneConfig.from_dict(saved).group_by_length is False
