"""What `veil query submit` shows while it waits, on a terminal only.

One line on stderr, rewritten in place: the query's id, its state in words (awaiting approval,
queued, running) and the time since submission. Nothing when stderr is not a terminal (a pipe,
a file, CI) or with ``--json``: scripts see exactly the result and nothing else.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

WORDS = {
    "PENDING_APPROVAL": "awaiting approval",
    "APPROVED": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "released",
}


class Progress:
    def __init__(self, stream: IO[str] | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(callable(isatty) and isatty()) if enabled is None else enabled
        self.start = time.monotonic()
        self._width = 0

    def __call__(self, info: Any) -> None:
        if not self.enabled:
            return
        state = WORDS.get(info.state, info.state.lower().replace("_", " "))
        if info.state == "PENDING_APPROVAL" and info.state_message:
            state = f"{state}: {info.state_message}"
        line = f"{info.id}  {state}  {time.monotonic() - self.start:.0f} s"
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def done(self) -> None:
        """Clear the line, so the result prints on a clean screen."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
