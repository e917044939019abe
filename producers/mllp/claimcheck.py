"""Claim checks: the full bytes of an oversize unit, kept in a local file.

A unit over ``max_message_bytes`` cannot go whole into one Kafka record, so its rejected
record carries the head and a claim check: the path and SHA-256 of a file holding every
byte of the unit (up to ``max_oversize_bytes``, so an endless sender cannot fill the disk).

The decoder writes to a ``ClaimCheck`` on the event loop thread as bytes arrive (chunks of
at most one socket read; local disk); ``seal`` (flush, fsync, close, fsync the directory)
blocks, so the listener runs it in an executor before the NAK goes out. Any OSError makes
the claim check fail without the decoder noticing: its partial file is removed, a WARNING
is logged (the errno name and the directory, never bytes) and the record falls back to
the head alone, saying why.

A file is written under ``<name>.part`` and renamed when sealed, so a listener killed in
the middle of a unit leaves a ``.part`` file that no record names; ``sweep`` removes such
files once they are older than any live unit could be (a unit in progress is written to
at least every idle timeout, or its connection is closed and its file removed).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_PART = ".part"  # a file still being written


class ClaimCheck:
    """One claim-check file being written. Not thread-safe: written on the loop, sealed on
    one executor thread after the decoder let go of it."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self._part = path.with_name(path.name + _PART)
        self.cap = cap
        self.stored = 0  # bytes in the file
        self.error: str | None = None  # errno name once writing failed
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # 0600 and O_EXCL: the bytes are PHI, and the name must be this unit's alone.
            fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self._file = os.fdopen(fd, "wb")
        except OSError as exc:
            self._fail(exc)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | bytearray) -> None:
        file = self._file
        if file is None:
            return
        room = self.cap - self.stored
        if len(data) > room:
            data = data[: max(room, 0)]
            if not data:
                return
        try:
            file.write(data)
        except OSError as exc:
            self._fail(exc)
            return
        self._hash.update(data)
        self.stored += len(data)

    def seal(self) -> None:
        """Make the file and its name durable. Blocking: run it off the event loop."""
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(self._part, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                file.close()
            self._fail(exc)

    def abort(self) -> None:
        """The unit will never be reported: remove its partial file."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
            with contextlib.suppress(OSError):
                self._part.unlink()

    def _fail(self, exc: OSError) -> None:
        self.error = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self.abort()
        log.warning(
            "claim-check file not written; keeping the head only",
            extra={"error": self.error, "claim_check_dir": str(self.path.parent)},
        )


class ClaimChecks:
    """Makes one ``ClaimCheck`` per oversize unit: ``<listener>-<UTC time>-<uuid>.bin``."""

    def __init__(self, directory: Path, listener_id: str, cap: int) -> None:
        self.directory = directory
        self.prefix = _UNSAFE.sub("_", listener_id)
        self.cap = cap

    def __call__(self) -> ClaimCheck:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{self.prefix}-{stamp}-{uuid.uuid4().hex}.bin"
        return ClaimCheck(self.directory / name, self.cap)

    def sweep(self, older_than_s: float) -> int:
        """Remove this listener's unsealed files not written to for ``older_than_s``: left
        by a process that died mid-unit, named by no record. Returns how many went."""
        cutoff = time.time() - older_than_s
        removed = 0
        for part in self.directory.glob(f"{self.prefix}-*.bin{_PART}"):
            with contextlib.suppress(OSError):  # gone meanwhile, or not ours to remove
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
        if removed:
            log.info("removed unsealed claim-check files left by a stopped listener",
                     extra={"count": removed, "claim_check_dir": str(self.directory)})
        return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
