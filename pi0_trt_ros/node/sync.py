# Copyright 2026 The pi0_trt_ros Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Time synchronization of the node's inputs, in pure Python on integer nanosecond stamps.

One job: decide which messages form one observation. Nothing here imports rclpy; the node turns
``header.stamp`` into ``sec * 1_000_000_000 + nanosec`` and calls in.

- :class:`ApproximateTimeSync` groups the camera streams with the ApproximateTime policy of the
  Python ROS 2 ``message_filters.ApproximateTimeSynchronizer`` (one queue per input, a ``slop``,
  every set contains the message that completed it). Given the same arrivals it emits the same sets;
  the one deliberate difference is that our ``slop_ns`` is inclusive (see the class docstring).
- :class:`NearestSampleBuffer` keeps a bounded ring of recent joint-state samples. Joint states
  (~100 Hz) do not take part in the camera set (~30 Hz); the node looks up the sample nearest the
  set's stamp, within a tolerance.
- :func:`set_age_ns` and :func:`exceeds_max_age` implement the maximum observation age.

Stamps are ``int`` nanoseconds throughout (no floats). Nothing here is thread-safe: call each object
from one thread (the node's executor callbacks) or under the caller's own lock.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar('T')


@dataclass
class SyncCounters:
    """Diagnostics counters of an :class:`ApproximateTimeSync`; every list has one entry per input.

    For each input ``i`` the counts balance at all times::

        received[i] == used[i] + dropped_overflow[i] + dropped_superseded[i] + dropped_cleared[i] + pending(i)

    ``received``: messages passed to ``add``. ``used``: messages that left in an emitted set.
    ``dropped_overflow``: messages evicted because the queue was full (oldest stamp first; this may
    be the message just added, when it is older than everything queued). ``dropped_superseded``:
    queued messages replaced by a later arrival with the same stamp. ``dropped_cleared``: queued
    messages discarded by ``clear``. ``out_of_order``: arrivals whose stamp is older than the newest
    stamp seen on that input (stamps going backwards, or a reordering transport); they are still
    queued. ``sets_emitted``: sets returned by ``add``.
    """

    received: list[int]
    used: list[int]
    dropped_overflow: list[int]
    dropped_superseded: list[int]
    dropped_cleared: list[int]
    out_of_order: list[int]
    sets_emitted: int = 0

    @classmethod
    def zeros(cls, num_inputs: int) -> 'SyncCounters':
        """Return counters at zero for ``num_inputs`` inputs."""
        return cls(*([0] * num_inputs for _ in range(6)))

    @property
    def dropped(self) -> int:
        """Return all messages dropped so far (overflow, superseded and cleared, every input)."""
        return sum(self.dropped_overflow) + sum(self.dropped_superseded) + sum(self.dropped_cleared)


class ApproximateTimeSync(Generic[T]):
    """Approximate-time synchronizer with the semantics of ``message_filters`` (ROS 2, Python).

    Each input ``i`` has a queue of at most ``queue_size`` messages keyed by stamp. On
    ``add(i, stamp, item)``:

    1. The item is queued under ``stamp``. A stamp already queued on that input is replaced in place
       (the newer message wins; counted in ``dropped_superseded``). If the queue then holds more
       than ``queue_size`` stamps, the smallest stamp is dropped (``dropped_overflow``); when that
       is the message just added, nothing is emitted.
    2. For every other input, the candidates are its queued stamps within ``slop_ns`` of ``stamp``,
       ordered by distance to ``stamp`` (ties keep queue order: the order in which the stamps were
       first queued). An input with no candidate means no set.
    3. The combinations of candidates are tried in lexicographic order (input 0's choice varies
       slowest, the new message fixed in its own slot); the first whose stamps span at most
       ``slop_ns`` (``max - min <= slop_ns``) is emitted and its messages leave their queues.

    So a set always contains the message that completed it, which is the newest arrival (not
    necessarily the newest stamp). This is a greedy policy: it does not look for the best set in
    the queues, messages that never match stay queued until overflow evicts them, and a set can
    pair a new message with an old leftover of another input that is still within ``slop_ns``.

    Slop: the largest allowed spread ``max(stamps) - min(stamps)`` of a set, in nanoseconds,
    inclusive: a spread of exactly ``slop_ns`` emits, ``slop_ns + 1`` does not. ``slop_ns = 0``
    means identical stamps. ``message_filters`` requires the spread to be strictly below its slop,
    so this class with ``slop_ns`` emits exactly what ``message_filters`` emits with
    ``slop_ns + 1`` nanoseconds; test/test_sync_differential.py checks that.

    Arrival order: nothing assumes stamps increase. A message that arrives late (out of order,
    another input lagging, a stamp that went backwards) is queued like any other and can complete
    a set with whatever is queued within ``slop_ns``, so successive sets are not guaranteed to be
    in time order. Backward stamps are counted in ``out_of_order``; the node decides whether they
    are errors (DESIGN §7) and, on a clock jump such as a looping bag, calls :meth:`clear`.

    Zero stamps are ordinary stamps here (as in ``message_filters``): a zero-stamped message only
    pairs with stamps within ``slop_ns`` of zero. The node should reject them before ``add``.

    Hot path: queues are short lists; candidate, search and output scratch lists are allocated once
    in the constructor. An ``add`` allocates no containers except, when it emits, the returned
    tuple and ``last_stamps``. Cost grows with ``queue_size`` (linear scans, tiny in practice).
    """

    def __init__(self, num_inputs: int, queue_size: int, slop_ns: int) -> None:
        """Create the synchronizer; raise ValueError for an argument that is not an int in its range.

        ``num_inputs``: synchronized inputs (>= 1; with 1, every message is a set). ``queue_size``:
        messages kept per input while waiting for partners (>= 1). ``slop_ns``: largest stamp
        spread of a set, inclusive (ns, >= 0).
        """
        for name, value, low in (('num_inputs', num_inputs, 1), ('queue_size', queue_size, 1),
                                 ('slop_ns', slop_ns, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
        self.num_inputs = num_inputs
        self.queue_size = queue_size
        self.slop_ns = slop_ns
        self.counters = SyncCounters.zeros(num_inputs)
        # Stamps of the last emitted set, by input (ns).
        self.last_stamps: tuple[int, ...] = ()
        # Queues in insertion order (the order message_filters' dicts keep): parallel stamp/item lists.
        self._stamps: list[list[int]] = [[] for _ in range(num_inputs)]
        self._items: list[list[T]] = [[] for _ in range(num_inputs)]
        self._newest: list[int | None] = [None] * num_inputs
        # For each input, the other inputs in index order: the search levels.
        self._others = tuple(tuple(j for j in range(num_inputs) if j != i) for i in range(num_inputs))
        # Candidates per input: queue positions sorted by distance, their distances, their count.
        self._cand_pos = [[0] * queue_size for _ in range(num_inputs)]
        self._cand_dist = [[0] * queue_size for _ in range(num_inputs)]
        self._cand_count = [0] * num_inputs
        # Depth-first search state per level: candidate index, and the stamp range before choosing.
        self._choice = [0] * num_inputs
        self._low = [0] * num_inputs
        self._high = [0] * num_inputs
        # Scratch for the set being emitted, by input.
        self._set_items: list[T | None] = [None] * num_inputs
        self._set_stamps = [0] * num_inputs

    def pending(self, index: int) -> int:
        """Return how many messages input ``index`` has queued."""
        return len(self._stamps[index])

    def queued_stamps(self, index: int) -> tuple[int, ...]:
        """Return the stamps input ``index`` has queued, in queue order (ns; for diagnostics, allocates)."""
        return tuple(self._stamps[index])

    def clear(self) -> None:
        """Drop every queued message (counted in ``dropped_cleared``), e.g. after the clock jumped back."""
        for i in range(self.num_inputs):
            self.counters.dropped_cleared[i] += len(self._stamps[i])
            self._stamps[i].clear()
            self._items[i].clear()
            self._newest[i] = None

    def add(self, index: int, stamp_ns: int, item: T) -> tuple[T, ...] | None:
        """Queue ``item`` of input ``index`` stamped ``stamp_ns`` (ns); return the set it completes.

        The set is one item per input, in input order, with ``item`` in it; its stamps are then in
        :attr:`last_stamps`. None when no set is complete. IndexError when ``index`` is not in
        ``range(num_inputs)``.
        """
        if not 0 <= index < self.num_inputs:
            raise IndexError(f'input index {index} out of range for {self.num_inputs} inputs')
        counters = self.counters
        counters.received[index] += 1
        newest = self._newest[index]
        if newest is None or stamp_ns > newest:
            self._newest[index] = stamp_ns
        elif stamp_ns < newest:
            counters.out_of_order[index] += 1

        stamps = self._stamps[index]
        items = self._items[index]
        if stamp_ns in stamps:
            pos = stamps.index(stamp_ns)
            items[pos] = item
            counters.dropped_superseded[index] += 1
        else:
            stamps.append(stamp_ns)
            items.append(item)
            if len(stamps) > self.queue_size:
                pos = stamps.index(min(stamps))
                del stamps[pos]
                del items[pos]
                counters.dropped_overflow[index] += 1
                if pos == len(stamps):  # the message just added was the oldest
                    return None
        if not self._find_candidates(index, stamp_ns) or not self._search(index, stamp_ns):
            return None
        return self._emit(index, stamp_ns)

    def _find_candidates(self, index: int, stamp_ns: int) -> bool:
        """Fill every other input's candidates (within slop, nearest first); False if one has none."""
        slop = self.slop_ns
        for j in self._others[index]:
            pos = self._cand_pos[j]
            dist = self._cand_dist[j]
            count = 0
            queue = self._stamps[j]
            for p in range(len(queue)):
                d = queue[p] - stamp_ns
                if d < 0:
                    d = -d
                if d > slop:
                    continue
                # Stable insertion sort: equal distances keep queue order.
                k = count
                while k > 0 and dist[k - 1] > d:
                    dist[k] = dist[k - 1]
                    pos[k] = pos[k - 1]
                    k -= 1
                dist[k] = d
                pos[k] = p
                count += 1
            if count == 0:
                return False
            self._cand_count[j] = count
        return True

    def _search(self, index: int, stamp_ns: int) -> bool:
        """Find the first combination, in lexicographic order, spanning at most slop; keep it in _choice.

        Depth-first over the other inputs; a prefix that already spans more than slop is cut,
        which skips only combinations that would fail, so the first one found is the same as
        in a plain walk over the Cartesian product.
        """
        others = self._others[index]
        last = len(others) - 1
        if last < 0:
            return True
        slop = self.slop_ns
        choice = self._choice
        low = self._low
        high = self._high
        low[0] = high[0] = stamp_ns
        choice[0] = 0
        level = 0
        while True:
            j = others[level]
            c = choice[level]
            if c == self._cand_count[j]:
                if level == 0:
                    return False
                level -= 1
                choice[level] += 1
                continue
            s = self._stamps[j][self._cand_pos[j][c]]
            lo = low[level]
            hi = high[level]
            if s < lo:
                lo = s
            elif s > hi:
                hi = s
            if hi - lo > slop:
                choice[level] = c + 1
                continue
            if level == last:
                return True
            level += 1
            low[level] = lo
            high[level] = hi
            choice[level] = 0

    def _emit(self, index: int, stamp_ns: int) -> tuple[T, ...]:
        """Take the chosen messages out of their queues and return them in input order."""
        out = self._set_items
        set_stamps = self._set_stamps
        used = self.counters.used
        for level, j in enumerate(self._others[index]):
            p = self._cand_pos[j][self._choice[level]]
            set_stamps[j] = self._stamps[j].pop(p)
            out[j] = self._items[j].pop(p)
            used[j] += 1
        p = self._stamps[index].index(stamp_ns)
        set_stamps[index] = self._stamps[index].pop(p)
        out[index] = self._items[index].pop(p)
        used[index] += 1
        self.counters.sets_emitted += 1
        self.last_stamps = tuple(set_stamps)
        result = tuple(out)
        for j in range(self.num_inputs):
            out[j] = None  # hold no message past its set
        return result


class NearestSampleBuffer(Generic[T]):
    """Bounded ring of recent stamped samples (joint states) with nearest-stamp lookup.

    ``add`` overwrites the oldest arrival once ``capacity`` samples are held. ``nearest(t)`` returns
    the sample whose stamp is closest to ``t`` if ``|stamp - t| <= tolerance_ns``, else None (a
    miss: no sample yet, the stream stopped, or a gap). Ties go to the later stamp (the fresher
    state), and among equal stamps to the later arrival. Arrival order does not matter for the
    lookup, so reordered or backward stamps are found like any other; only eviction follows
    arrival order. Size ``capacity`` to cover the camera latency plus slop at the joint rate
    (e.g. 100 Hz x 0.5 s = 50).
    """

    def __init__(self, capacity: int, tolerance_ns: int) -> None:
        """Create an empty ring; raise ValueError for an argument that is not an int in its range.

        ``capacity``: samples kept (>= 1). ``tolerance_ns``: largest accepted distance between a
        sample and the requested stamp (ns, >= 0, inclusive).
        """
        for name, value, low in (('capacity', capacity, 1), ('tolerance_ns', tolerance_ns, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
        self.capacity = capacity
        self.tolerance_ns = tolerance_ns
        self.hits = 0
        self.misses = 0
        self._stamps = [0] * capacity
        self._items: list[T | None] = [None] * capacity
        self._next = 0  # slot the next sample goes to
        self._count = 0

    def __len__(self) -> int:
        """Return how many samples are held."""
        return self._count

    def clear(self) -> None:
        """Forget every sample, e.g. after the clock jumped back."""
        for slot in range(self.capacity):
            self._items[slot] = None
        self._next = 0
        self._count = 0

    def add(self, stamp_ns: int, item: T) -> None:
        """Store ``item`` stamped ``stamp_ns`` (ns), overwriting the oldest arrival when full."""
        slot = self._next
        self._stamps[slot] = stamp_ns
        self._items[slot] = item
        self._next = slot + 1 if slot + 1 < self.capacity else 0
        if self._count < self.capacity:
            self._count += 1

    def nearest(self, stamp_ns: int) -> T | None:
        """Return the sample nearest ``stamp_ns`` (ns) within the tolerance, else None."""
        slot = self._find(stamp_ns)
        return None if slot < 0 else self._items[slot]

    def nearest_entry(self, stamp_ns: int) -> tuple[int, T] | None:
        """Return ``(stamp_ns, sample)`` of the sample nearest ``stamp_ns`` within the tolerance, else None."""
        slot = self._find(stamp_ns)
        return None if slot < 0 else (self._stamps[slot], self._items[slot])

    def _find(self, stamp_ns: int) -> int:
        """Return the slot of the nearest sample within the tolerance, or -1; count the hit or miss."""
        best = -1
        best_dist = 0
        best_stamp = 0
        capacity = self.capacity
        slot = self._next - self._count
        if slot < 0:
            slot += capacity
        for _ in range(self._count):  # oldest arrival first
            s = self._stamps[slot]
            d = s - stamp_ns
            if d < 0:
                d = -d
            if best < 0 or d < best_dist or (d == best_dist and s >= best_stamp):
                best, best_dist, best_stamp = slot, d, s
            slot = slot + 1 if slot + 1 < capacity else 0
        if best < 0 or best_dist > self.tolerance_ns:
            self.misses += 1
            return -1
        self.hits += 1
        return best


def set_age_ns(now_ns: int, stamps: Sequence[int]) -> int:
    """Return the age of a set at ``now_ns``: now minus its oldest stamp (ns).

    Both must be on the same clock (the node's ROS clock; sim time when replaying a bag). A
    negative age means a stamp lies in the future (clock skew between machines). ValueError when
    ``stamps`` is empty.
    """
    return now_ns - min(stamps)


def exceeds_max_age(now_ns: int, stamps: Sequence[int], max_age_ns: int) -> bool:
    """Return True when the oldest of ``stamps`` is older than ``max_age_ns`` at ``now_ns``.

    An age of exactly ``max_age_ns`` is accepted; one nanosecond more is rejected. Pass every
    stamp the observation is built from (cameras and the matched joint sample), so that no part
    of it is stale. ValueError when ``stamps`` is empty.
    """
    return now_ns - min(stamps) > max_age_ns
