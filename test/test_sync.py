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

"""Unit and property tests of pi0_trt_ros.node.sync (no ROS needed).

The equivalence with message_filters itself is in test_sync_differential.py.
"""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from pi0_trt_ros.node.sync import ApproximateTimeSync, exceeds_max_age, NearestSampleBuffer, set_age_ns

MS = 1_000_000  # ns
PROPERTY = settings(max_examples=100, deadline=None)


def feed(sync, events):
    """Add (input, stamp) events with items (input, sequence number); return the emitted sets."""
    sets = []
    for seq, (i, stamp) in enumerate(events):
        out = sync.add(i, stamp, (i, seq))
        if out is not None:
            sets.append(out)
    return sets


def stamps_of(items, events):
    """Return the stamps of an emitted set of (input, sequence number) items."""
    return tuple(events[seq][1] for _, seq in items)


# Construction ---------------------------------------------------------------------------------

@pytest.mark.parametrize('args, match', [
    ((0, 5, 10), 'num_inputs must be an int >= 1, got 0'),
    ((3, 0, 10), 'queue_size must be an int >= 1, got 0'),
    ((3, 5, -1), 'slop_ns must be an int >= 0, got -1'),
    ((3, 5, 0.01), r'slop_ns must be an int >= 0, got 0\.01'),
    ((3, True, 10), 'queue_size must be an int >= 1, got True'),
])
def test_sync_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        ApproximateTimeSync(*args)


def test_sync_rejects_input_index_out_of_range():
    sync = ApproximateTimeSync(3, 5, 10)
    with pytest.raises(IndexError, match='input index 3 out of range for 3 inputs'):
        sync.add(3, 100, 'x')
    with pytest.raises(IndexError, match='input index -1 out of range for 3 inputs'):
        sync.add(-1, 100, 'x')


@pytest.mark.parametrize('args, match', [
    ((0, 10), 'capacity must be an int >= 1, got 0'),
    ((10, -1), 'tolerance_ns must be an int >= 0, got -1'),
    ((10, 1.5), r'tolerance_ns must be an int >= 0, got 1\.5'),
])
def test_nearest_buffer_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        NearestSampleBuffer(*args)


# Slop -----------------------------------------------------------------------------------------

def test_spread_of_exactly_slop_emits():
    sync = ApproximateTimeSync(3, 5, 10 * MS)
    assert sync.add(0, 100 * MS, 'a') is None
    assert sync.add(1, 105 * MS, 'b') is None
    assert sync.add(2, 110 * MS, 'c') == ('a', 'b', 'c')
    assert sync.last_stamps == (100 * MS, 105 * MS, 110 * MS)
    assert sync.counters.sets_emitted == 1
    assert [sync.pending(i) for i in range(3)] == [0, 0, 0]


def test_spread_of_slop_plus_one_ns_does_not_emit():
    sync = ApproximateTimeSync(3, 5, 10 * MS)
    sync.add(0, 100 * MS, 'a')
    sync.add(1, 105 * MS, 'b')
    assert sync.add(2, 110 * MS + 1, 'c') is None
    assert sync.counters.sets_emitted == 0
    assert [sync.pending(i) for i in range(3)] == [1, 1, 1]


def test_spread_is_checked_over_the_whole_set_not_only_against_the_new_message():
    # Both partners are within slop of the new message (distance 10), but 20 apart.
    sync = ApproximateTimeSync(3, 5, 10)
    sync.add(0, 90, 'a')
    sync.add(1, 110, 'b')
    assert sync.add(2, 100, 'c') is None
    assert sync.add(1, 95, 'd') == ('a', 'd', 'c')  # 90, 95, 100: spread 10
    assert sync.queued_stamps(1) == (110,)


def test_zero_slop_needs_identical_stamps():
    sync = ApproximateTimeSync(3, 5, 0)
    sync.add(0, 100, 'a')
    sync.add(1, 100, 'b')
    assert sync.add(2, 101, 'c') is None
    assert sync.add(2, 100, 'd') == ('a', 'b', 'd')


def test_single_input_passes_every_message_through():
    sync = ApproximateTimeSync(1, 3, 0)
    assert sync.add(0, 5, 'a') == ('a',)
    assert sync.add(0, 3, 'b') == ('b',)
    assert sync.counters.sets_emitted == 2


# Queues ---------------------------------------------------------------------------------------

def test_queue_overflow_drops_the_oldest_stamp():
    sync = ApproximateTimeSync(3, 2, 0)
    sync.add(0, 300, 'c')
    sync.add(0, 100, 'a')
    sync.add(0, 200, 'b')  # queue {300, 100, 200} > 2: 100 goes, though 200 arrived last
    assert sync.pending(0) == 2
    assert sync.counters.dropped_overflow == [1, 0, 0]
    sync.add(1, 100, 'x')
    assert sync.add(2, 100, 'y') is None  # input 0's 100 is gone
    sync.add(1, 200, 'x2')
    assert sync.add(2, 200, 'y2') == ('b', 'x2', 'y2')
    sync.add(1, 300, 'x3')
    assert sync.add(2, 300, 'y3') == ('c', 'x3', 'y3')


def test_new_message_older_than_a_full_queue_is_dropped_and_emits_nothing():
    sync = ApproximateTimeSync(3, 2, 0)
    sync.add(1, 100, 'x')
    sync.add(2, 100, 'y')
    sync.add(0, 200, 'b')
    sync.add(0, 300, 'c')
    assert sync.add(0, 100, 'a') is None  # its partners are queued, but it is the one evicted
    assert sync.counters.dropped_overflow == [1, 0, 0]
    assert sync.pending(0) == 2


def test_out_of_order_arrival_is_queued_and_counted():
    sync = ApproximateTimeSync(3, 5, 2)
    sync.add(0, 300, 'late-stamp')
    sync.add(0, 100, 'early-stamp')  # arrives second: stamp went backwards
    assert sync.counters.out_of_order == [1, 0, 0]
    sync.add(1, 101, 'b')
    assert sync.add(2, 99, 'c') == ('early-stamp', 'b', 'c')
    sync.add(1, 300, 'b2')
    assert sync.add(2, 301, 'c2') == ('late-stamp', 'b2', 'c2')


def test_duplicate_stamp_replaces_the_queued_message():
    sync = ApproximateTimeSync(3, 5, 0)
    sync.add(0, 100, 'first')
    sync.add(0, 100, 'second')
    assert sync.pending(0) == 1
    assert sync.counters.dropped_superseded == [1, 0, 0]
    assert sync.counters.out_of_order == [0, 0, 0]  # equal is not backwards
    sync.add(1, 100, 'b')
    assert sync.add(2, 100, 'c') == ('second', 'b', 'c')


def test_equidistant_candidates_are_taken_in_the_order_first_queued():
    # Partners at 90 and 110 are both 10 from 100; the one queued first wins, and replacing a
    # queued stamp keeps its place (as a Python dict keeps a key's place on assignment).
    sync = ApproximateTimeSync(3, 5, 10)
    sync.add(1, 110, 'late')
    sync.add(1, 90, 'early')
    sync.add(1, 110, 'late-again')
    sync.add(2, 100, 'c')
    assert sync.add(0, 100, 'a') == ('a', 'late-again', 'c')
    sync.add(2, 100, 'c2')
    assert sync.add(0, 100, 'a2') == ('a2', 'early', 'c2')


def test_nearest_partner_is_preferred_within_slop():
    sync = ApproximateTimeSync(3, 5, 10)
    for stamp in (92, 99, 104):
        sync.add(1, stamp, f'b{stamp}')
    sync.add(2, 100, 'c')
    assert sync.add(0, 101, 'a') == ('a', 'b99', 'c')
    assert sync.pending(1) == 2


def test_combinations_are_tried_with_the_lowest_input_varying_slowest():
    # Nearest first on each input: input 0 offers 95 then 107, input 1 offers 106 then 93.
    # (95, 106) spans 11 > 9; next come (95, 93) and only then (107, 106): both span 7.
    sync = ApproximateTimeSync(3, 5, 9)
    for stamp in (95, 107):
        sync.add(0, stamp, f'a{stamp}')
    for stamp in (106, 93):
        sync.add(1, stamp, f'b{stamp}')
    assert sync.add(2, 100, 'c') == ('a95', 'b93', 'c')


def test_set_contains_the_message_that_completed_it():
    sync = ApproximateTimeSync(3, 5, 10)
    sync.add(0, 100, 'a')
    sync.add(1, 101, 'b')
    assert sync.add(2, 102, 'c') == ('a', 'b', 'c')
    sync.add(2, 200, 'c1')
    sync.add(0, 201, 'a1')
    assert sync.add(1, 199, 'b1') == ('a1', 'b1', 'c1')
    assert sync.last_stamps == (201, 199, 200)


def test_lagging_camera_matches_when_its_frames_arrive():
    # Cameras 0 and 1 arrive on time at 30 Hz; camera 2's frames arrive three frames late.
    period = 33_333_333
    lag = 3
    frames = 12
    sync = ApproximateTimeSync(3, 5, 5 * MS)
    sets = []
    for k in range(frames + lag):
        for i in (0, 1):
            if k < frames:
                out = sync.add(i, k * period + i * MS, (i, k))
                assert out is None  # camera 2 has nothing for this frame yet
        if k >= lag:
            out = sync.add(2, (k - lag) * period + 2 * MS, (2, k - lag))
            sets.append(out)
    assert sets == [((0, k), (1, k), (2, k)) for k in range(frames)]
    assert sync.counters.dropped == 0


def test_lagging_camera_beyond_the_queue_finds_its_partners_evicted():
    period = 33_333_333
    sync = ApproximateTimeSync(3, 2, 5 * MS)
    for k in range(10):
        sync.add(0, k * period, (0, k))
        sync.add(1, k * period, (1, k))
        if k >= 3:
            assert sync.add(2, (k - 3) * period, (2, k - 3)) is None
    assert sync.counters.sets_emitted == 0
    assert sync.counters.dropped_overflow[:2] == [8, 8]


def test_greedy_policy_can_pair_a_new_message_with_an_old_leftover():
    # message_filters' policy, kept on purpose (test_sync_differential.py checks the same
    # stream against message_filters): input 0's leftover 10 is still within slop of input
    # 1's 18, so the third set goes back in time on input 0 (13, then 10).
    events = [(0, 4), (0, 8), (0, 10), (2, 3), (2, 8), (2, 9), (1, 8), (2, 11), (0, 13), (1, 16),
              (2, 16), (1, 18)]
    sync = ApproximateTimeSync(3, 4, 9)
    sets = feed(sync, events)
    assert [stamps_of(s, events) for s in sets] == [(8, 8, 8), (13, 16, 11), (10, 18, 16)]


def test_clear_drops_queued_messages_and_counts_them():
    sync = ApproximateTimeSync(3, 5, 0)
    sync.add(0, 100, 'a')
    sync.add(1, 100, 'b')
    sync.clear()
    assert sync.counters.dropped_cleared == [1, 1, 0]
    assert sync.add(2, 100, 'c') is None
    sync.add(0, 50, 'a2')  # after a clear, an older stamp is not out of order
    assert sync.counters.out_of_order == [0, 0, 0]


def test_zero_stamps_are_ordinary_stamps():
    sync = ApproximateTimeSync(3, 5, 10)
    sync.add(0, 0, 'a')
    sync.add(1, 10, 'b')
    assert sync.add(2, 5, 'c') == ('a', 'b', 'c')
    sync.add(0, 0, 'a')
    sync.add(1, 11, 'b')
    assert sync.add(2, 5, 'c') is None


# Maximum age ----------------------------------------------------------------------------------

def test_set_age_is_measured_from_the_oldest_stamp():
    assert set_age_ns(1_000 * MS, [990 * MS, 980 * MS, 995 * MS]) == 20 * MS
    assert set_age_ns(100, [150]) == -50  # a stamp in the future


def test_max_age_rejects_one_ns_past_the_limit():
    stamps = [900 * MS, 950 * MS]
    assert not exceeds_max_age(1_000 * MS, stamps, 100 * MS)
    assert exceeds_max_age(1_000 * MS + 1, stamps, 100 * MS)
    assert not exceeds_max_age(1_000 * MS + 1, [950 * MS], 100 * MS)


def test_max_age_of_no_stamps_is_an_error():
    with pytest.raises(ValueError):
        exceeds_max_age(0, [], 10)


# Nearest joint sample -------------------------------------------------------------------------

def test_nearest_sample_is_selected_and_counted():
    joints = NearestSampleBuffer(8, 5 * MS)
    for k in range(6):
        joints.add(k * 10 * MS, f'j{k}')
    assert joints.nearest(23 * MS) == 'j2'
    assert joints.nearest(27 * MS) == 'j3'
    assert joints.nearest_entry(41 * MS) == (40 * MS, 'j4')
    assert (joints.hits, joints.misses) == (3, 0)


def test_nearest_sample_tolerance_is_inclusive():
    joints = NearestSampleBuffer(8, 5 * MS)
    joints.add(100 * MS, 'j')
    assert joints.nearest(105 * MS) == 'j'
    assert joints.nearest(95 * MS) == 'j'
    assert joints.nearest(105 * MS + 1) is None
    assert joints.nearest(95 * MS - 1) is None
    assert (joints.hits, joints.misses) == (2, 2)


def test_nearest_sample_misses_when_empty_or_stopped():
    joints = NearestSampleBuffer(4, 5 * MS)
    assert joints.nearest(0) is None
    assert joints.nearest_entry(0) is None
    for k in range(4):
        joints.add(k * 10 * MS, k)
    assert joints.nearest(200 * MS) is None  # the stream stopped long before the cameras' stamp
    assert joints.misses == 3


def test_nearest_sample_ties_go_to_the_later_stamp_then_the_later_arrival():
    joints = NearestSampleBuffer(8, 10)
    joints.add(110, 'after')
    joints.add(90, 'before')
    assert joints.nearest(100) == 'after'
    joints.add(110, 'after-again')
    assert joints.nearest(100) == 'after-again'


def test_nearest_sample_ring_forgets_the_oldest_arrival():
    joints = NearestSampleBuffer(3, 100)
    for stamp in (10, 500, 20, 30):  # 10 is overwritten by 30
        joints.add(stamp, stamp)
    assert len(joints) == 3
    assert joints.nearest(0) == 20
    assert joints.nearest(480) == 500
    joints.clear()
    assert len(joints) == 0
    assert joints.nearest(20) is None


# Properties -----------------------------------------------------------------------------------

events_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60)), max_size=80)


@PROPERTY
@given(events=events_strategy, queue_size=st.integers(1, 5), slop=st.integers(0, 12))
def test_property_sets_are_valid_and_messages_are_used_once(events, queue_size, slop):
    sync = ApproximateTimeSync(3, queue_size, slop)
    seen = set()
    emitted = 0
    for seq, (i, stamp) in enumerate(events):
        out = sync.add(i, stamp, (i, seq))
        assert all(sync.pending(j) <= queue_size for j in range(3))
        if out is None:
            continue
        emitted += 1
        assert out[i] == (i, seq)  # the message that completed it
        assert [item[0] for item in out] == [0, 1, 2]  # each slot from its own input
        stamps = stamps_of(out, events)
        assert stamps == sync.last_stamps
        assert max(stamps) - min(stamps) <= slop
        assert seen.isdisjoint(out)
        seen.update(out)
    c = sync.counters
    assert c.sets_emitted == emitted
    for j in range(3):
        assert c.received[j] == sum(1 for i, _ in events if i == j)
        assert c.used[j] == emitted
        assert c.received[j] == c.used[j] + c.dropped_overflow[j] + c.dropped_superseded[j] + sync.pending(j)


@PROPERTY
@given(events=events_strategy, queue_size=st.integers(1, 5), slop=st.integers(0, 12))
def test_property_no_set_is_missed_when_one_exists(events, queue_size, slop):
    # Whenever add returns None although the new message is still queued, no combination of
    # queued partners spans at most slop with it.
    sync = ApproximateTimeSync(3, queue_size, slop)
    for seq, (i, stamp) in enumerate(events):
        out = sync.add(i, stamp, (i, seq))
        if out is not None or stamp not in sync.queued_stamps(i):
            continue  # emitted, or the new message was evicted at once
        others = [sync.queued_stamps(j) for j in range(3) if j != i]
        for combo in itertools.product(*others):
            assert max(combo + (stamp,)) - min(combo + (stamp,)) > slop


@st.composite
def regular_streams(draw):
    """Three 30 Hz streams with jitter, drops and any interleaving; each input in stamp order."""
    period = 33_333_333
    slop = draw(st.integers(0, 10)) * MS
    jitter = draw(st.integers(0, 5)) * MS  # |stamp - frame time| <= jitter, so frames never mix
    frames = draw(st.integers(1, 30))
    streams = []
    for i in range(3):
        stamps = [k * period + draw(st.integers(-jitter, jitter)) + MS for k in range(frames)
                  if draw(st.integers(0, 9)) > 0]  # ~10 % dropped
        streams.append([(i, s) for s in stamps])
    order = draw(st.lists(st.integers(0, 2), min_size=sum(map(len, streams)),
                          max_size=sum(map(len, streams))))
    events = []
    for pick in order:  # interleave by drawing which input delivers next
        nonempty = [s for s in streams if s]
        events.append(nonempty[pick % len(nonempty)].pop(0))
    return events, slop, draw(st.integers(1, 6))


@PROPERTY
@given(case=regular_streams())
def test_property_regular_streams_give_sets_in_time_order_per_input(case):
    # When each input's stamps arrive in order and frames are further apart than slop, sets come
    # out in strictly increasing time order on every input (in general they need not: see
    # test_greedy_policy_can_pair_a_new_message_with_an_old_leftover).
    events, slop, queue_size = case
    sync = ApproximateTimeSync(3, queue_size, slop)
    sets = feed(sync, events)
    for j in range(3):
        stamps = [stamps_of(s, events)[j] for s in sets]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


@PROPERTY
@given(case=regular_streams())
def test_property_lockstep_delivery_matches_every_frame_present_on_all_inputs(case):
    # Deliver the same stamps frame by frame; with slop covering the jitter (<= 5 ms each side),
    # every frame that no input dropped becomes one set, even with a queue of one.
    events, slop, _ = case
    period = 33_333_333
    frames = {}
    for i, s in events:
        frames.setdefault(round((s - MS) / period), []).append((i, s))
    lockstep = [e for k in sorted(frames) for e in sorted(frames[k])]
    sync = ApproximateTimeSync(3, 1, slop + 10 * MS)
    sets = feed(sync, lockstep)
    complete = [k for k in sorted(frames) if len(frames[k]) == 3]
    assert [round((stamps_of(s, lockstep)[0] - MS) / period) for s in sets] == complete


@PROPERTY
@given(adds=st.lists(st.integers(0, 200), max_size=40), query=st.integers(-20, 220),
       capacity=st.integers(1, 8), tolerance=st.integers(0, 30))
def test_property_nearest_sample_matches_a_brute_force_search(adds, query, capacity, tolerance):
    joints = NearestSampleBuffer(capacity, tolerance)
    for seq, stamp in enumerate(adds):
        joints.add(stamp, seq)
    kept = list(enumerate(adds))[-capacity:]
    expected = None
    if kept:
        seq, stamp = min(kept, key=lambda e: (abs(e[1] - query), -e[1], -e[0]))
        if abs(stamp - query) <= tolerance:
            expected = (stamp, seq)
    assert joints.nearest_entry(query) == expected
