"""Live progress of a job: problems done, solved, FLOPs spent.

A tqdm bar when stderr is a terminal; otherwise (logs, ``ray job submit``) one plain
line every ``interval_s`` seconds and one at the end, so a log shows progress without
carriage-return noise.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from tqdm import tqdm


def format_flops(value: float) -> str:
    """``1.23e15`` style, short enough for a progress line."""
    return f"{value:.3g}" if value < 1000 else f"{value:.2e}".replace("e+", "e")


class Progress:
    """Reports ``update()`` calls as a bar or as periodic lines.

    Args:
        total: problems in the job.
        mode: ``"auto"`` (bar on a TTY, lines otherwise), ``"bar"``, ``"lines"`` or ``"off"``.
        interval_s: seconds between plain lines.
        stream: where to write; stderr by default.
    """

    def __init__(self, total: int, mode: str = "auto", interval_s: float = 10.0,
                 stream: TextIO | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        if mode == "auto":
            mode = "bar" if _isatty(self.stream) else "lines"
        self.mode = mode
        self.num_done = 0
        self.num_solved = 0
        self.num_verifiable = 0
        self.flops = 0
        self._start = time.monotonic()
        self._last_line = self._start
        self._bar = None
        if mode == "bar":
            self._bar = tqdm(total=total, file=self.stream, unit="problem", dynamic_ncols=True)

    def update(self, num_done: int = 0, num_solved: int = 0, num_verifiable: int = 0,
               flops: int | None = None) -> None:
        """Add finished problems (and how many of them were verified correct); set FLOPs spent.

        Args:
            num_done: problems finished since the last call.
            num_solved: of those, how many the task verified correct.
            num_verifiable: of those, how many the task could verify at all.
            flops: FLOPs the job has spent so far (a total, not an increment).
        """
        self.num_done += num_done
        self.num_solved += num_solved
        self.num_verifiable += num_verifiable
        if flops is not None:
            self.flops = flops
        if self._bar is not None:
            self._bar.set_postfix_str(self._stats(), refresh=False)
            self._bar.update(num_done)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last_line >= self.interval_s:
                self._last_line = now
                self._write_line()

    def close(self) -> None:
        """Finish the bar, or write the final line."""
        if self._bar is not None:
            self._bar.set_postfix_str(self._stats())
            self._bar.close()
            self._bar = None
        elif self.mode == "lines":
            self._write_line()

    def _stats(self) -> str:
        solved = f"solved {self.num_solved}/{self.num_verifiable}" if self.num_verifiable else "solved -"
        return f"{solved}, {format_flops(self.flops)} FLOPs"

    def _write_line(self) -> None:
        elapsed = time.monotonic() - self._start
        print(f"[ponder] {self.num_done}/{self.total} problems, {self._stats()}, "
              f"{elapsed:.0f}s", file=self.stream, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: TextIO) -> bool:
    """A terminal a bar can be drawn on (a pty of width 0, as under `script`, cannot)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):
        return False
