"""The listener workers' shared claim table (producers/mllp/claims.py): retransmission
claims, take-over from dead workers, spool-mode grants, and exclusion between processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fhirbus.producers.mllp.claims import (
    NEW_DIRECT,
    NEW_SPOOL,
    SEEN,
    WAIT,
    ClaimTable,
)

WINDOW_S = 60.0


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def parent() -> Iterator[ClaimTable]:
    table = ClaimTable.create(WINDOW_S, max_entries=1_000)
    yield table
    table.close()


def worker(parent: ClaimTable, index: int, window_s: float = WINDOW_S) -> ClaimTable:
    return ClaimTable(parent.fd, window_s, index, parent.new_generation(index))


def test_a_key_is_claimed_once_then_seen_once_stored(parent: ClaimTable) -> None:
    a, b = worker(parent, 0), worker(parent, 1)
    now = time.time()
    answer, offset = a.claim(key(1), now, [])
    assert answer == NEW_DIRECT and offset >= 0
    assert b.claim(key(1), now, [])[0] == WAIT  # the first copy is being stored
    assert a.claim(key(1), now, [])[0] == WAIT  # also for a resend on the same worker
    a.finish([(offset, False, True)], now)
    assert b.claim(key(1), now, [])[0] == SEEN
    assert b.claim(key(2), now, [])[0] == NEW_DIRECT


def test_a_copy_not_stored_leaves_the_key_to_the_resend(parent: ClaimTable) -> None:
    a, b = worker(parent, 0), worker(parent, 1)
    now = time.time()
    _, offset = a.claim(key(1), now, [])
    finished = [(offset, False, False)]  # NAKed: the sender keeps it
    answer, _ = b.claim(key(2), now, [])  # unrelated claim
    assert answer == NEW_DIRECT
    assert a.claim(key(3), now, finished)[0] == NEW_DIRECT  # applies the report first
    assert finished == []
    assert b.claim(key(1), now, [])[0] == NEW_DIRECT


def test_seen_expires_with_the_window_and_a_zero_window_keeps_only_in_flight(
    parent: ClaimTable,
) -> None:
    a = worker(parent, 0)
    now = time.time()
    _, offset = a.claim(key(1), now, [])
    a.finish([(offset, False, True)], now)
    assert a.claim(key(1), now + WINDOW_S - 1, [])[0] == SEEN
    assert a.claim(key(1), now + WINDOW_S + 1, [])[0] == NEW_DIRECT
    off = worker(parent, 1, window_s=0)
    _, offset = off.claim(key(2), now, [])
    assert off.claim(key(2), now, [])[0] == WAIT
    off.finish([(offset, False, True)], now)
    assert off.claim(key(2), now, [])[0] == NEW_DIRECT


def test_a_dead_workers_claims_are_taken_over(parent: ClaimTable) -> None:
    a, b = worker(parent, 0), worker(parent, 1)
    now = time.time()
    _, offset = a.claim(key(1), now, [])
    assert b.claim(key(1), now, [])[0] == WAIT
    parent.new_generation(0)  # the parent saw worker 0 die
    assert b.claim(key(1), now, [])[0] == NEW_DIRECT
    a.finish([(offset, False, True)], now)  # the old generation's late report is ignored
    assert worker(parent, 2).claim(key(1), now, [])[0] == WAIT


def test_loaded_window_is_seen(parent: ClaimTable) -> None:
    now = time.time()
    parent.load([(key(1), now - 10), (key(2), now - WINDOW_S - 10)])
    a = worker(parent, 0)
    assert a.claim(key(1), now, [])[0] == SEEN
    assert a.claim(key(2), now, [])[0] == NEW_DIRECT


def test_spool_mode_ends_only_when_no_grant_is_outstanding(parent: ClaimTable) -> None:
    a, b = worker(parent, 0), worker(parent, 1)
    now = time.time()
    assert not parent.spooling
    a.force_spool()  # a's broker did not confirm: spooled, with a grant
    assert parent.spooling
    answer, offset = b.claim(key(1), now, [])
    assert answer == NEW_SPOOL
    made, outstanding = a.spool_status()
    assert outstanding == 2
    assert not a.clear(made)
    b.finish([(offset, True, True)], now)
    a.finish([(-1, True, True)], now)
    made, outstanding = a.spool_status()
    assert outstanding == 0
    assert b.claim(None, now, [])[0] == NEW_SPOOL  # a grant made after the status was read
    assert not a.clear(made)
    b.finish([(-1, True, True)], now)
    made, _ = a.spool_status()
    assert a.clear(made)
    assert not parent.spooling
    assert b.claim(None, now, [])[0] == NEW_DIRECT


def test_a_dead_workers_grants_lapse(parent: ClaimTable) -> None:
    a, b = worker(parent, 0), worker(parent, 1)
    parent.set_spooling(True)
    assert b.claim(None, time.time(), [])[0] == NEW_SPOOL
    made, outstanding = a.spool_status()
    assert outstanding == 1
    parent.new_generation(1)
    assert a.spool_status() == (made, 0)
    assert a.clear(made)


def test_a_full_bucket_drops_its_oldest_finished_key(parent: ClaimTable) -> None:
    a = worker(parent, 0)
    now = time.time()
    same_bucket = [k for k in (key(n) for n in range(100_000)) if parent.bucket(k) == 0]
    for age, k in enumerate(same_bucket[:16]):
        _, offset = a.claim(k, now - 30 + age, [])
        a.finish([(offset, False, True)], now - 30 + age)
    assert a.claim(same_bucket[16], now, [])[0] == NEW_DIRECT
    assert a.claim(same_bucket[0], now, [])[0] == NEW_DIRECT  # the oldest went
    assert a.claim(same_bucket[15], now, [])[0] == SEEN


_CLAIMER = """
import sys, time, hashlib
from fhirbus.producers.mllp.claims import ClaimTable, NEW_DIRECT
fd, index, generation = (int(a) for a in sys.argv[1:4])
table = ClaimTable(fd, 60.0, index, generation)
keys = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(20000)]
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # all start together
won = 0
for k in keys:
    answer, offset = table.claim(k, time.time(), [])
    if answer == NEW_DIRECT:
        won += 1
        table.finish([(offset, False, True)], time.time())
print(won)
"""


def test_processes_claiming_the_same_keys_win_each_exactly_once() -> None:
    table = ClaimTable.create(WINDOW_S, max_entries=50_000)
    start = time.time() + 2.0
    args = [(table.fd, i, table.new_generation(i), start) for i in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, *map(str, a)],
            pass_fds=(table.fd,),
            stdout=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    won = [int(p.communicate(timeout=120)[0]) for p in procs]
    table.close()
    assert sum(won) == 20000, won
    assert all(won), won  # they did race: each won some
