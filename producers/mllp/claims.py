"""What the worker processes of one listener must agree on, in shared memory.

With ``--workers N`` (workers.py) each worker has its own event loop and producer, but two
promises span all of them:

* Retransmissions. A message whose key (``intake.dedup_key``) was stored within the window
  is acknowledged again and not stored again, whichever worker stored it; a resend that
  arrives while the first copy is still being stored, on any worker, waits for that
  outcome. So every keyed message *claims* its key before it is stored.
* Arrival order through the spool. All workers share one spool file (its AUTOINCREMENT
  sequence is the commit order across processes, and worker 0 alone forwards it). While
  it holds anything, every worker must spool, never publish around it, or a message sent
  after an earlier one was acknowledged from the spool could overtake it.

Both live in one table in shared memory (a memfd the parent creates and passes to every
worker), changed only under a file lock (``flock``, each process on its own open file, so
a process that dies releases it): per message one claim, a few microseconds with no round
trip to another process; reports of finished messages are applied in batches, with the
next claim or once per loop iteration (tickets.py). A first version asked the parent over
a socket; that cost the 2-core machine about a fifth of the listener's CPU per message,
most of what a second worker gains.

Layout: a header of 64-bit words (spool mode, grants, and a *generation* per worker index
that the parent bumps when a worker dies), then buckets of 16 slots of 32 bytes: the first
128 bits of the key, when (ms), and ``meta`` (0 = free; state, owner index, owner
generation). A key lives only in its bucket; a full bucket reuses an expired entry, then
one whose owner died, then its oldest entry (as the in-process window drops its oldest
keys at its size limit: a possible duplicate later, never a loss). A claim whose owner's
generation is stale (it died before finishing) is taken over: that copy was never
acknowledged. Writes put ``meta`` last and clear it first, one aligned word each, so a
worker killed mid-write leaves a free slot, never a wrong key marked stored.

Spool mode: every route decided while it is on is a *grant*, counted until the worker
reports the message done (after its spool commit). Only the forwarder turns spool mode off
(``clear``), when no grant is outstanding and none was made since it found the spool
empty, so no append can land behind its back.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
from collections.abc import Iterable, Iterator

# Claim answers.
NEW_DIRECT, NEW_SPOOL, SEEN, WAIT = 0, 1, 2, 3
MAX_WORKERS = 32
_MAGIC = 0x316D6C6373756266  # "fbusclm1"
# Header words.
_H_MAGIC, _H_BUCKETS, _H_SPOOLING, _H_GRANTS_MADE = 0, 1, 2, 3
_H_GRANTS = 8  # MAX_WORKERS words: grants not yet reported done, per worker
_H_GEN = _H_GRANTS + MAX_WORKERS  # MAX_WORKERS words: each worker index's generation
_HEADER = 1024
_SLOTS = 16
_BUCKET_BYTES = _SLOTS * 32
_WORD = struct.Struct("<Q")
_AT_META = struct.Struct("<2Q")
_METAS = struct.Struct("<" + "24xQ" * _SLOTS)  # a bucket's 16 meta words
_ATS = struct.Struct("<" + "16xQ8x" * _SLOTS)  # its 16 times
_PENDING, _DONE = 1, 2


def _meta(state: int, worker: int, generation: int) -> int:
    return state | worker << 2 | generation << 8


# A finished claim: (slot offset or -1, held a spool grant, stored).
Finish = tuple[int, bool, bool]


class ClaimTable:
    """The shared table. Every method takes the lock itself; call from one thread.

    ``worker``/``generation``: who claims through this handle (the parent uses none).
    """

    def __init__(self, fd: int, window_s: float, worker: int = 0, generation: int = 0) -> None:
        self.fd = fd
        self.window_ms = int(window_s * 1000)
        self.worker = worker
        self._pending = _meta(_PENDING, worker, generation)
        self._map = mmap.mmap(fd, 0)
        if self._word(_H_MAGIC) != _MAGIC:
            raise ValueError("not a claim table")
        self.buckets = self._word(_H_BUCKETS)
        self._mask = self.buckets - 1
        self._lock_fd = _own_open_file(fd)

    @classmethod
    def create(cls, window_s: float, max_entries: int = 1_000_000) -> ClaimTable:
        """A new table for about ``max_entries`` keys (buckets at most half full)."""
        buckets = 1
        while buckets * _SLOTS < 2 * max_entries:
            buckets *= 2
        fd = _anonymous_file(_HEADER + buckets * _BUCKET_BYTES)
        header = mmap.mmap(fd, _HEADER)
        _WORD.pack_into(header, _H_BUCKETS * 8, buckets)
        _WORD.pack_into(header, _H_MAGIC * 8, _MAGIC)
        header.close()
        return cls(fd, window_s)

    def close(self) -> None:
        self._map.close()
        if self._lock_fd != self.fd:
            os.close(self._lock_fd)

    # Per message (workers).
    def claim(self, key: str | None, now: float, finished: list[Finish]) -> tuple[int, int]:
        """(answer, slot offset or -1). NEW_DIRECT / NEW_SPOOL: store it (there); SEEN:
        stored within the window, do not store; WAIT: another copy is being stored now,
        ask again later. ``finished`` is applied first (and emptied), under the same lock."""
        lock = self._lock_fd
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if finished:
                self._apply(finished, now)
            offset = -1
            if key is not None:
                answer, offset = self._claim_key(key, self._pending, int(now * 1000))
                if answer is not None:
                    return answer, offset
            return self._route(), offset
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def force_spool(self) -> None:
        """The broker did not confirm a message: it is spooled, and everyone spools."""
        with self._locked():
            self._set(_H_SPOOLING, 1)
            self._route()

    def finish(self, finished: list[Finish], now: float) -> None:
        """Claimed messages stored (their keys are seen from now on) or not (free again)."""
        with self._locked():
            self._apply(finished, now)

    # Spool mode (the forwarder, the parent).
    @property
    def spooling(self) -> bool:
        return bool(self._word(_H_SPOOLING))  # one aligned word: no lock needed to peek

    def spool_status(self) -> tuple[int, int]:
        """(grants ever made, grants not yet reported done)."""
        with self._locked():
            return self._word(_H_GRANTS_MADE), self._outstanding()

    def clear(self, grants_seen: int) -> bool:
        """Spool mode off, if no grant is outstanding and none was made since the forwarder
        read ``grants_seen`` (before it found the spool empty)."""
        with self._locked():
            if self._word(_H_GRANTS_MADE) != grants_seen or self._outstanding():
                return False
            self._set(_H_SPOOLING, 0)
            return True

    def set_spooling(self, on: bool) -> None:
        with self._locked():
            self._set(_H_SPOOLING, int(on))

    # The parent.
    def new_generation(self, worker: int) -> int:
        """For a worker (re)started at ``worker``: what the last one there claimed and was
        granted lapses (it is dead, nothing of it still commits)."""
        if not 0 <= worker < MAX_WORKERS:
            raise ValueError(f"at most {MAX_WORKERS} workers")
        with self._locked():
            generation = self._word(_H_GEN + worker) + 1
            self._set(_H_GEN + worker, generation)
            self._set(_H_GRANTS + worker, 0)
            return generation

    def load(self, entries: Iterable[tuple[str, float]]) -> None:
        """Keys stored before (the spool's seen window), as if finished then."""
        pending = _meta(_PENDING, 0, 0)
        with self._locked():
            for key, at in entries:
                _, offset = self._claim_key(key, pending, int(at * 1000))
                if offset >= 0 and self._word_at(offset + 24) == pending:
                    self._finish_at(offset, pending, True, int(at * 1000))

    # Under the lock.
    def _claim_key(self, key: str, pending: int, now: int) -> tuple[int | None, int]:
        kb = bytes.fromhex(key[:32])  # the key's first 128 bits, as stored
        base = _HEADER + self._bucket(kb) * _BUCKET_BYTES
        offset = self._find(kb, base)
        if offset >= 0:
            at, meta = _AT_META.unpack_from(self._map, offset + 16)
            if meta & 3 == _DONE and self.window_ms > 0 and now - at <= self.window_ms:
                return SEEN, -1
            if meta & 3 == _PENDING and self._alive(meta):
                return WAIT, -1
        else:
            offset = base + self._victim(base, now) * 32
        m = self._map
        _WORD.pack_into(m, offset + 24, 0)  # free while being written
        m[offset : offset + 16] = kb
        _AT_META.pack_into(m, offset + 16, now, 0)
        _WORD.pack_into(m, offset + 24, pending)
        return None, offset

    def _apply(self, finished: list[Finish], now: float) -> None:
        now_ms = int(now * 1000)
        pending = self._pending
        granted = 0
        for offset, grant, stored in finished:
            granted += grant
            if offset >= 0:
                self._finish_at(offset, pending, stored, now_ms)
        finished.clear()
        if granted:
            index = _H_GRANTS + self.worker
            self._set(index, max(0, self._word(index) - granted))

    def _finish_at(self, offset: int, pending: int, stored: bool, now: int) -> None:
        if self._word_at(offset + 24) != pending:
            return  # taken over meanwhile (we were thought dead): not ours to finish
        if stored:
            _WORD.pack_into(self._map, offset + 16, now)
            _WORD.pack_into(self._map, offset + 24, _DONE)
        else:
            _WORD.pack_into(self._map, offset + 24, 0)  # a waiting resend takes it now

    def bucket(self, key: str) -> int:
        return self._bucket(bytes.fromhex(key[:32]))

    def _bucket(self, kb: bytes) -> int:
        return int.from_bytes(kb[:8], "little") & self._mask

    def _find(self, kb: bytes, base: int) -> int:
        """The offset of the key's slot in its bucket, or -1 (a byte search: no ints made)."""
        m, end = self._map, base + _BUCKET_BYTES
        at = m.find(kb, base, end)
        while at >= 0:
            if (at - base) % 32 == 0 and _WORD.unpack_from(m, at + 24)[0]:
                return at
            at = m.find(kb, at + 1, end)
        return -1

    def _victim(self, base: int, now: int) -> int:
        """The slot for a new key: free, else expired, else a dead owner's, else oldest."""
        metas = _METAS.unpack_from(self._map, base)
        with contextlib.suppress(ValueError):
            return metas.index(0)
        ats = _ATS.unpack_from(self._map, base)
        oldest, oldest_at = 0, None
        for slot, meta in enumerate(metas):
            at = ats[slot]
            if meta & 3 == _DONE:
                if now - at > self.window_ms:
                    return slot
                if oldest_at is None or at < oldest_at:
                    oldest, oldest_at = slot, at
            elif not self._alive(meta):
                return slot
        # All sixteen claimed by live workers cannot happen with fewer concurrent
        # messages than that per bucket; if it did, the oldest finished key goes.
        return oldest

    def _alive(self, meta: int) -> bool:
        worker, generation = (meta >> 2) & 0x3F, meta >> 8
        return self._word(_H_GEN + worker) == generation

    def _route(self) -> int:
        if not self._word(_H_SPOOLING):
            return NEW_DIRECT
        worker = self.worker
        self._set(_H_GRANTS + worker, self._word(_H_GRANTS + worker) + 1)
        self._set(_H_GRANTS_MADE, self._word(_H_GRANTS_MADE) + 1)
        return NEW_SPOOL

    def _outstanding(self) -> int:
        return sum(self._word(_H_GRANTS + w) for w in range(MAX_WORKERS))

    def _word(self, index: int) -> int:
        return int(_WORD.unpack_from(self._map, index * 8)[0])

    def _word_at(self, offset: int) -> int:
        return int(_WORD.unpack_from(self._map, offset)[0])

    def _set(self, index: int, value: int) -> None:
        _WORD.pack_into(self._map, index * 8, value)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


def _anonymous_file(size: int) -> int:
    """A file in memory only, gone when its last descriptor closes (Linux: memfd)."""
    if not hasattr(os, "memfd_create"):
        raise OSError("listener workers need Linux (memfd_create)")
    fd = os.memfd_create("fhirbus-mllp-claims")  # close-on-exec: passed to workers explicitly
    os.ftruncate(fd, size)
    return fd


def _own_open_file(fd: int) -> int:
    """A descriptor on its own open file description: ``flock`` excludes by open file, and
    a descriptor passed to a child shares the parent's. Linux reopens through /proc."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:  # no /proc: fail rather than not exclude
        raise OSError(f"cannot reopen the claim table for locking: {exc}") from None
