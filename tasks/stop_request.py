"""A stop asked for by a signal, kept as well as raised.

SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does. Python drops an
exception that a signal handler raises while a finalizer runs (a `__del__`, a weakref
callback: "Exception ignored in ..."), and the work would then go on to the end; so the
request is also kept here, and training raises it again at its next step
(`tasks.train.StopWhenAsked`). Light on imports: the command line installs the handler.
"""

from __future__ import annotations

requested: str | None = None  # what asked for the stop, once something did


def raise_keyboard_interrupt(signum: int, frame) -> None:
    """The SIGTERM handler: note the request, then stop as Ctrl-C would."""
    global requested
    requested = f"signal {signum}"
    raise KeyboardInterrupt(requested)
