"""A progress bar for the applications' training loops: tqdm when installed, else a plain status line.

What it is: a tiny wrapper with update(n, **postfix) and close(), writing to stderr, which can be turned
off (tqdm.auto, so a notebook gets its widget bar); and the stop request of a first Ctrl-C (the command line
sets it; Trainer.fit polls take_stop() and, for the loops that are not Trainer's, update() raises
TrainingInterrupted at the end of the step, where the loop's state is whole).
What it is not: a logger; nothing is kept.
"""
from __future__ import annotations

import sys
import time

from ..train import TrainingInterrupted  # noqa: F401  (raised here and by Trainer.fit; defined in train)

_STOP = {"requested": False}


def request_stop():
    _STOP["requested"] = True


def clear_stop():
    _STOP["requested"] = False


def stop_requested():
    return _STOP["requested"]


def take_stop():
    """True once after a stop request (Trainer.fit's should_stop): the request is cleared."""
    if _STOP["requested"]:
        clear_stop()
        return True
    return False


class Progress:
    """Progress over `total` units (steps or seconds). postfix values are shown as key=value."""

    def __init__(self, total, desc="", unit="step", enabled=True):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.n = 0
        self._bar = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm.auto import tqdm
                self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                                 mininterval=0.25, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<"
                                 "{remaining}{postfix}]")
            except ImportError:
                self._bar = None

    def update(self, n=1, **postfix):
        """Advance by n (called once per finished step). Raises TrainingInterrupted after a Ctrl-C."""
        if _STOP["requested"]:
            clear_stop()
            raise TrainingInterrupted("training stopped by Ctrl-C")
        n = max(0, min(n, self.total - self.n))     # a time budget overshoots by a fraction of a step
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last >= 0.5 or self.n >= self.total:
            self._last = now
            pf = " ".join(f"{k}={v}" for k, v in postfix.items())
            sys.stderr.write(f"\r{self.desc} {self.n:.0f}/{self.total:.0f} {self.unit} {pf}   ")
            sys.stderr.flush()

    def write(self, text):
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            if self.enabled:
                sys.stderr.write("\n")
            print(text, flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
