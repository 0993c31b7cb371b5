"""Notes a library call has for its user (a conversion it made that the user did not ask for),
told through one listener: the command line prints them; napari shows each as a notification,
where a print reaches a terminal a GUI user never sees (a red-team finding: an RGB layer read as
its luminance by a gray model, unsaid in napari)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_listener: ContextVar[Callable[[str], None] | None] = ContextVar("unetkit_notes", default=None)


def say(note: str) -> None:
    """Tell the listener of this thread (notes_to), else print it as 'note: ...'."""
    listener = _listener.get()
    if listener is None:
        print(f"note: {note}")
    else:
        listener(note)


_SAID: set[str] = set()  # the kinds of note said in this process (say_once)


def say_once(kind: str, text: str) -> None:
    """`text`, the first time a note of this `kind` is said in this process: a folder of a thousand
    photographs would say the same conversion a thousand times."""
    if kind not in _SAID:
        _SAID.add(kind)
        say(text)


def said(kind: str) -> bool:
    """Whether a note of this `kind` was said in this process (what it took to find it can be skipped)."""
    return kind in _SAID


@contextmanager
def notes_to(listener: Callable[[str], None]) -> Iterator[None]:
    """Within the block, this thread's notes go to `listener` (a thread starts with none set)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
