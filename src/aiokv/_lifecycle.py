"""The states an engine goes through (``Engine.state``).

``NEW`` until open() succeeds, ``OPEN`` until close() starts, ``CLOSING``
while it writes what is left, then ``CLOSED``; an engine inherited by the
child of a fork is ``FORKED`` for good (see ``Engine.forsake_after_fork``).
The engine's parts check the state under the engine's ``lock`` before they
change anything, and refuse with ``Engine.unusable()``.
"""

from __future__ import annotations

NEW, OPEN, CLOSING, CLOSED = "new", "open", "closing", "closed"
FORKED = "forked"
