"""Examples -> rows -> micro-batches, deterministically, so that a resumed run sees the very same batches.

Owns packing (several examples share one ``seq_len`` row; each keeps its own positions and attends only to itself
through ``doc_ids``) and the seeded order of micro-batches across epochs: micro-batch ``k`` of a run is a pure
function of (data, seed, k). Lists of ints only; the training loop turns a batch into tensors.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from kaiyuan.tune._render import IGNORE_INDEX, TokenizedExample

__all__ = ["Batch", "Row", "Schedule", "pad_batch", "rows_from_examples"]


@dataclass
class Row:
    """One training sequence: one example, or several packed ones."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]  # restart at 0 for every packed example (RoPE positions as at inference)
    doc_ids: list[int]  # which packed example each token belongs to; attention never crosses examples

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def rows_from_examples(
    examples: Sequence[TokenizedExample], seq_len: int, *, packing: bool, seed: int = 0
) -> list[Row]:
    """One row per example, or (packing) examples laid into as few rows of at most ``seq_len`` tokens as we can.

    Packing is best-fit decreasing: longest example first, each into the fullest row that still has room for it.
    That fills rows far better than laying examples in file order (a long example no longer closes a half-empty
    row), which is the whole point of packing: every padding token is compute spent on nothing. Which examples
    share a row depends on lengths only; ties are broken by a seeded shuffle so equal-length data still mixes.
    """
    if not packing:
        return [
            Row(list(e.input_ids), list(e.labels), list(range(len(e.input_ids))), [0] * len(e.input_ids))
            for e in examples
        ]
    tiebreak = list(range(len(examples)))
    random.Random(seed).shuffle(tiebreak)
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i].input_ids), tiebreak[i]))
    rows: list[Row] = []
    free: list[tuple[int, int]] = []  # (room left, row index), ascending: bisect finds the best fit
    for index in order:
        e = examples[index]
        n = len(e.input_ids)
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, r = free.pop(at)
        else:
            room, r = max(seq_len, n), len(rows)
            rows.append(Row([], [], [], []))
        row = rows[r]
        doc = row.doc_ids[-1] + 1 if row.doc_ids else 0
        row.input_ids += e.input_ids
        row.labels += e.labels
        row.position_ids += range(n)
        row.doc_ids += [doc] * n
        if room - n > 0:
            bisect.insort(free, (room - n, r))
    return rows


@dataclass
class Batch:
    """Rows right-padded to a common width (lists of lists, one per row)."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    position_ids: list[list[int]]
    doc_ids: list[list[int]]
    padded: bool  # some row was padded

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return sum(1 for row in self.doc_ids for d in row if d >= 0)


def pad_batch(rows: Sequence[Row], pad_id: int) -> Batch:
    """Right-pad rows to the longest.

    Padding tokens get label IGNORE_INDEX and doc id -1 (they attend only among themselves, never to real tokens).
    """
    width = max(len(r.input_ids) for r in rows)
    batch = Batch([], [], [], [], padded=any(len(r.input_ids) < width for r in rows))
    for r in rows:
        n = width - len(r.input_ids)
        batch.input_ids.append(r.input_ids + [pad_id] * n)
        batch.labels.append(r.labels + [IGNORE_INDEX] * n)
        batch.position_ids.append(r.position_ids + list(range(n)))
        batch.doc_ids.append(r.doc_ids + [-1] * n)
    return batch


# Rows sorted by length within windows of this many micro-batches (group by length): wide enough that batches come
# out of similar lengths, narrow enough that the data order stays random at the scale of an epoch.
GROUP_WINDOW_BATCHES = 32


@dataclass
class Schedule:
    """The run's sequence of micro-batches: epoch ``e`` visits the rows in a seeded shuffle of its own.

    With ``lengths`` (group by length), each epoch's shuffle is cut into windows of ``GROUP_WINDOW_BATCHES``
    micro-batches, each window is sorted by row length and cut into micro-batches, and the micro-batches are
    shuffled again. A micro-batch is padded to its longest row, so batching rows of similar length removes most
    padding (on data of uneven lengths, most of the compute) while every row is still seen once per epoch.
    """

    n_rows: int
    batch_size: int  # rows per micro-batch
    seed: int
    lengths: Sequence[int] | None = None  # row lengths (tokens) to group by; None: plain shuffle
    _epochs: dict[int, list[list[int]]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def batches_per_epoch(self) -> int:
        return max(1, -(-self.n_rows // self.batch_size))

    def micro_batch(self, k: int) -> list[int]:
        """Row indices of micro-batch ``k`` (counted from the start of the run, across epochs)."""
        epoch, index = divmod(k, self.batches_per_epoch)
        if epoch not in self._epochs:
            self._epochs.clear()  # epochs are visited in order: keep only the current one
            self._epochs[epoch] = self._batches(epoch)
        return self._epochs[epoch][index]

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(self.n_rows))
        rng.shuffle(order)
        size = self.batch_size
        if self.lengths is None:
            return [order[i : i + size] for i in range(0, self.n_rows, size)] or [[]]
        lengths = self.lengths
        window = size * GROUP_WINDOW_BATCHES
        batches: list[list[int]] = []
        for start in range(0, self.n_rows, window):
            chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        rng.shuffle(batches)
        return batches or [[]]
