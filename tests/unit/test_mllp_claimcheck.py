"""Claim-check files: the whole unit up to the cap, private, unique, durable; failures fall
back quietly (a WARNING, no bytes) instead of raising into the decoder."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from fhirbus.producers.mllp.claimcheck import ClaimChecks


def test_file_holds_the_bytes_with_their_digest(tmp_path: Path) -> None:
    checks = ClaimChecks(tmp_path / "rejected" / "l1", "l/1", cap=1000)
    claim, other = checks(), checks()
    claim.write(b"MSH|head")
    claim.write(bytearray(b"tail"))
    claim.seal()
    assert claim.ok and claim.path.read_bytes() == b"MSH|headtail"
    assert claim.sha256 == hashlib.sha256(b"MSH|headtail").hexdigest() and claim.stored == 12
    assert claim.path.name.startswith("l_1-") and claim.path != other.path
    assert stat.S_IMODE(claim.path.stat().st_mode) == 0o600
    other.abort()
    assert not other.path.exists()


def test_cap_keeps_the_first_bytes_only(tmp_path: Path) -> None:
    claim = ClaimChecks(tmp_path, "l1", cap=10)()
    for _ in range(5):
        claim.write(b"abcd")
    claim.seal()
    assert claim.path.read_bytes() == b"abcdabcdab" and claim.stored == 10
    assert claim.sha256 == hashlib.sha256(b"abcdabcdab").hexdigest()


def test_unwritable_directory_fails_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A file where the directory should be: refused even to root, unlike a chmod.
    (tmp_path / "taken").write_bytes(b"")
    claim = ClaimChecks(tmp_path / "taken" / "sub", "l1", cap=10)()
    claim.write(b"MSH|secret")
    claim.seal()
    assert not claim.ok and claim.error in ("ENOTDIR", "EEXIST")
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert "secret" not in caplog.text


def test_write_error_removes_the_partial_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claim = ClaimChecks(tmp_path, "l1", cap=100)()
    claim.write(b"MSH|first")

    class Full:
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            pass

    claim._file.close()  # type: ignore[union-attr]
    claim._file = Full()  # type: ignore[assignment]
    claim.write(b"MSH|secret")
    claim.seal()
    assert claim.error == "ENOSPC" and not claim.path.exists()
    assert "secret" not in caplog.text and "claim-check file not written" in caplog.text


def test_a_unit_is_written_unsealed_and_named_only_when_sealed(tmp_path: Path) -> None:
    claim = ClaimChecks(tmp_path, "l1", cap=100)()
    claim.write(b"MSH|part")
    assert not claim.path.exists()  # a reader never sees a half-written claim check
    assert [p.name for p in tmp_path.iterdir()] == [claim.path.name + ".part"]
    claim.seal()
    assert [p.name for p in tmp_path.iterdir()] == [claim.path.name]


def test_sweep_removes_only_old_unsealed_files_of_this_listener(tmp_path: Path) -> None:
    checks = ClaimChecks(tmp_path, "l1", cap=100)
    orphan, live, sealed = checks(), checks(), checks()
    for claim in (orphan, live, sealed):
        claim.write(b"MSH|x")
    sealed.seal()
    other = tmp_path / "l2-20260101T000000.000000Z-abc.bin.part"  # another listener's
    other.write_bytes(b"MSH|y")
    old = time.time() - 3600
    for path in (orphan.path.with_name(orphan.path.name + ".part"), other, sealed.path):
        os.utime(path, (old, old))
    assert checks.sweep(older_than_s=600) == 1
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {live.path.name + ".part", sealed.path.name, other.name}
    live.abort()
