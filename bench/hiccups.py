"""How often the machine itself stalls during a run (jHiccup's idea, for our benchmarks).

A separate process sleeps 1 ms at a time and records every wake-up that came late by more
than a threshold. It runs no fhirbus code and takes no lock of the benchmark, so a stall it
sees was the machine's (the VM paused, the host scheduled something else), and the same
stall lands on whatever the benchmark was timing then. On the shared 2-core VMs this
project is measured on, an idle loop sees pauses of 20-90 ms a few times a minute; one
such pause during a 10 s run at 1,000 msg/s delays ~100 messages, a full 1% of them, and
so moves a p99 by itself. The benchmarks print these stalls beside their percentiles.

    with HiccupMeter() as meter:
        ...  # the timed phase
    print(meter.summary())
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from types import TracebackType

_THRESHOLD_S = 0.010  # a wake-up this late counts as a stall


class HiccupMeter:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.stalls_ms: list[float] = []

    def __enter__(self) -> HiccupMeter:
        self._proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self._proc.stdout.readline()  # "ready": the loop runs before the timed phase starts
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        assert self._proc is not None
        out, _ = self._proc.communicate("", timeout=30)  # closing stdin ends the loop
        self.stalls_ms = [float(x) for x in out.split()]

    def summary(self) -> str:
        if not self.stalls_ms:
            return f"machine stalls (an idle loop woke > {_THRESHOLD_S * 1e3:.0f} ms late): none"
        return (
            f"machine stalls (an idle loop woke > {_THRESHOLD_S * 1e3:.0f} ms late): "
            f"{len(self.stalls_ms)}, worst {max(self.stalls_ms):.0f} ms, "
            f"{sum(self.stalls_ms):.0f} ms in all"
        )


def _measure() -> None:
    """The child: sleep 1 ms at a time until stdin closes, then print each stall (ms)."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stalls: list[float] = []
    print("ready", flush=True)
    last = time.monotonic()
    while not stop.is_set():
        time.sleep(0.001)
        now = time.monotonic()
        late = now - last - 0.001
        if late > _THRESHOLD_S:
            stalls.append(late * 1e3)
        last = now
    print(" ".join(f"{s:.1f}" for s in stalls), flush=True)


if __name__ == "__main__":
    _measure()
