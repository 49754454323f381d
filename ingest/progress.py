"""How far an ingest run is. On a terminal: a bar with the pages stored of the pages planned, pages per second, the
time left and the file being encoded. Elsewhere (a pipe, a log file, `--json`): a short line on stderr now and then.
Or nothing. The planner counts pages ahead of the encoder, so the total is known early and the time left is real."""

from __future__ import annotations

import sys
import threading
import time

from core.errors import printable

LINE_EVERY_S = 60.0  # seconds between progress lines where no bar can be drawn
NAME_CHARS = 40  # the current file's name, shortened to this on the bar


class Progress:
    """`mode`: "bar", "lines", "off", or None for a bar on a terminal and lines elsewhere. Its methods are called
    from the pipeline's threads."""

    def __init__(self, mode: str | None = None, stream=None, every: float = LINE_EVERY_S, clock=time.monotonic):
        self.stream = stream or sys.stderr
        if mode is None:
            mode = "bar" if _is_terminal(self.stream) else "lines"
        self.mode = mode
        self.every = every
        self.clock = clock
        self.total = 0  # pages planned so far
        self.done = 0  # pages stored
        self.current = ""  # the file being encoded
        self.all_planned = False
        self._started: float | None = None  # when the first page went to the encoder
        self._last_line: float | None = None
        self._lock = threading.Lock()
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=0,
                unit="page",
                desc="ingest (planning)",
                file=self.stream,
                leave=False,  # the report follows: no bar is left behind
                dynamic_ncols=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} pages |{bar}| {rate_fmt}, {remaining} left{postfix}",
            )

    def plan(self, pages: int) -> None:
        with self._lock:
            self.total += pages
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def planned(self) -> None:
        """Every file is planned: the total is final."""
        with self._lock:
            self.all_planned = True
            if self._bar is not None:
                self._bar.set_description_str("ingest", refresh=True)

    def now(self, name: str) -> None:
        """The pipeline starts encoding pages of `name`."""
        with self._lock:
            if self._started is None:  # the rate counts from the first page encoded, not from loading the model
                self._started = self.clock()
                self._last_line = self._started
                if self._bar is not None:
                    self._bar.reset(total=self.total)
            self.current = name
            if self._bar is not None:
                self._bar.set_postfix_str(_short(name), refresh=True)

    def update(self, pages: int) -> None:
        """`pages` more pages are stored."""
        with self._lock:
            self.done += pages
            if self._bar is not None:
                self._bar.update(pages)
            elif self.mode == "lines" and self._last_line is not None and self.clock() - self._last_line >= self.every:
                self._last_line = self.clock()
                print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        """One line on how far the run is, for logs."""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"progress: {self.done} of {self.total}{'' if self.all_planned else '+'} pages stored{share}"
        rate = self.rate()
        if rate:
            text += f", {rate:.2f} pages/s"
            if self.all_planned:
                text += f", about {duration((self.total - self.done) / rate)} left"
        if self.current:
            text += f"; now {printable(self.current)}"
        return text

    def rate(self) -> float | None:
        if self._started is None or not self.done:
            return None
        elapsed = self.clock() - self._started
        return self.done / elapsed if elapsed > 0 else None

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _short(name: str) -> str:
    name = printable(name.rsplit("/", 1)[-1])
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
