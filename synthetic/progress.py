"""A progress line on stderr: families, children, files, rate and time left."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line in a terminal (every ``interval`` seconds); prints a plain line every
    ``log_interval`` seconds when stderr is a file or a pipe, so logs stay readable."""

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True,
                 interval: float = 0.5, log_interval: float = 10.0) -> None:
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, families: int, children: int, files: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = families / elapsed
        left = (self.total - families) / rate if rate > 0 else 0.0
        line = (f"synth: {families:,}/{self.total:,} families  {children:,} children  {files} files  "
                f"{rate:,.0f} families/s  {children / elapsed:,.0f} children/s  "
                + (f"done in {_clock(elapsed)}" if families >= self.total else f"ETA {_clock(left)}"))
        if self.tty:
            self.stream.write("\r" + line.ljust(110))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, families: int, children: int, files: int) -> None:
        self.update(families, children, files, force=True)
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
