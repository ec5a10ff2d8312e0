"""Progress lines of the reproduction commands, on stderr, with the seconds since the start."""

from __future__ import annotations

import sys
import time


class Log:
    """``log(message)`` prints ``[  12.3 s] message`` on stderr when ``enabled``."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:6.1f} s] {message}", file=sys.stderr, flush=True)
