"""The end of the log being appended to: where the next frame goes, the mapped
window it is copied into, and what recovery needs to tell a power loss from
damage (how far the log is fsynced, and how far SYNCED frames say so).
"""

from __future__ import annotations

import logging
import mmap

from ._files import FileSystem, Window
from ._format import HEADER_SIZE, encode_synced

logger = logging.getLogger("aiokv")

MIN_RESERVE = 64 * 1024
MAX_RESERVE = 8 * 1024 * 1024
"""At "flush", space reserved after the log's end for the mapped window that
appends go through: an eighth of the log, within these bounds."""


class LogWriter:
    """Appends frames to one open log, and keeps its end and its vouching.

    Every field is guarded by the engine's ``lock``; replacing or closing
    ``fd`` also takes ``io`` (the engine does that). The room of set()'s
    hot path (``fast_end``) lives here, with the window it writes into: the
    engine grants it (``grant_room``) only when nothing else is due, and
    anything that must stop the hot path calls ``revoke_room``.

    Vouching (see _recovery): in a VOUCHED log, the first append after an
    fsync is preceded by a SYNCED frame naming how far that fsync reached.
    ``synced_end`` is how far the log is known fsynced, ``marked_end`` how far
    a SYNCED frame (or the header) says so.
    """

    def __init__(self, files: FileSystem, name: str) -> None:
        self._files = files
        self._name = name  # the store's path, for messages
        self.fd: int | None = None
        self.end = 0
        """The log's length: where the next frame goes."""
        self.map_appends = False
        """Appends are copied into a mapped window of reserved space (no
        system call each; the page cache holds them, so they survive kill -9)."""
        self.window: Window | None = None
        self.window_end = 0
        """Where the window ends in the file (0: none)."""
        self.reserved_end = 0
        """The file's size while space is reserved past ``end``."""
        self.tail_dirty = False
        """Bytes past ``end`` may be garbage (a failed write): cut before appending."""
        self.fast_end = 0
        """How far set()'s hot path may append (0: not at all)."""
        self.vouched = False
        self.synced_end = 0
        self.marked_end = 0
        self.unsynced = False
        """"flush" and "buffered": frames were written that no fsync has
        covered yet (the writer thread fsyncs ``fsync_interval`` after)."""
        self.unsynced_since = 0.0
        """Since when (``time.monotonic()``) ``unsynced`` holds."""

    def switch(self, fd: int, end: int) -> tuple[int, int]:
        """Append to another file from now on: the one open at ``fd``, whose
        first ``end`` bytes are written and its header fsynced. Returns the
        descriptor and length of the file appended to until now, which the
        caller keeps. The window must be released first (release_reserved);
        whether writes are unsynced carries over."""
        assert self.window is None, "release the window before switching files"
        old_fd, old_end = self.fd, self.end
        assert old_fd is not None
        self.fd, self.end = fd, end
        self.reserved_end = 0
        self.tail_dirty = False
        self.fast_end = 0
        self.vouch_from(HEADER_SIZE)  # the header is fsynced, not yet what follows it
        return old_fd, old_end

    # -- the hot path's room -------------------------------------------------

    def grant_room(self, limit: int) -> None:
        """Let the hot path append up to ``limit`` (and the window's end)."""
        self.fast_end = min(self.window_end, limit)

    def revoke_room(self) -> None:
        self.fast_end = 0

    def limit_room(self, limit: int) -> None:
        """Keep the hot path short of ``limit`` (room already granted shrinks)."""
        self.fast_end = min(self.fast_end, limit)

    # -- vouching -------------------------------------------------------------

    def vouch_from(self, end: int, vouched: bool = True, marked: int | None = None) -> None:
        """A new log (or one just opened) is fsynced up to ``end``.

        ``marked``: how far its SYNCED frames (or header) vouch, if less.
        """
        self.vouched = vouched
        self.synced_end = end
        self.marked_end = end if marked is None else marked
        self._revoke_room_if_mark_due()

    def mark_due(self) -> bool:
        """Whether the next append must be preceded by a SYNCED frame: the
        hot path, which only copies a frame, has no room meanwhile."""
        return self.vouched and self.synced_end > self.marked_end

    def _revoke_room_if_mark_due(self) -> None:
        if self.mark_due():
            self.fast_end = 0

    def synced(self, end: int) -> None:
        """An fsync of the log up to ``end`` succeeded."""
        if end > self.synced_end:
            self.synced_end = end
            self._revoke_room_if_mark_due()

    def take_mark(self) -> tuple[bytes, int]:
        """The SYNCED frame due before the next append (or b"").

        The caller writes it first in that append. Returns also what to give
        ``unmark`` if the append fails.
        """
        previous = self.marked_end
        if not self.mark_due():
            return b"", previous
        mark = encode_synced(self.synced_end)
        # Written right where the fsynced part ends, the frame needs no frame
        # of its own to vouch for it (recovery reads it the same way).
        adjacent = self.end == self.synced_end
        self.marked_end = self.synced_end + (len(mark) if adjacent else 0)
        return mark, previous

    def unmark(self, previous: int) -> None:
        """The append that held a SYNCED frame failed: it is not in the log."""
        self.marked_end = previous
        self._revoke_room_if_mark_due()

    # -- appending -------------------------------------------------------------

    def write_frame(self, frame: bytes) -> None:
        """Write one frame at the log's end (mapped, or write(2))."""
        if self.map_appends:
            if self.window is None or self.end + len(frame) > self.window_end:
                self.reserve(len(frame))
            assert self.window is not None
            # Nothing to take off the hot path's room: fast_end is an offset
            # and end moves past this frame below.
            self.window.write(frame)
        else:
            fd = self.fd
            assert fd is not None
            try:
                written = self._files.write(fd, frame)
                if written != len(frame):
                    self.write_all(memoryview(frame)[written:])
            except OSError:
                self.cut_tail_after_failure()
                raise
        self.end += len(frame)

    def write_all(self, data: bytes | memoryview) -> None:
        """write(2) all of ``data`` at the end of the file (not the log's ``end``)."""
        assert self.fd is not None
        view = memoryview(data)
        written = self._files.write(self.fd, view)
        while written < len(view):
            if written <= 0:
                raise OSError("write made no progress")
            view = view[written:]
            written = self._files.write(self.fd, view)

    def reserve(self, needed: int) -> None:
        """Reserve space past the log's end and map it.

        Raises OSError (ENOSPC...) with nothing appended; whatever the failed
        reservation left past the end is cut before the next append.
        """
        self.drop_window()
        fd = self.fd
        assert fd is not None
        start = self.end
        size = max(min(max(start // 8, MIN_RESERVE), MAX_RESERVE), needed)
        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            self._files.allocate(fd, start, size)
            window = self._files.map(fd, base, start + size - base)
        except OSError:
            self.tail_dirty = True
            raise
        window.seek(start - base)
        self.window, self.window_end = window, start + size
        self.reserved_end = max(self.reserved_end, start + size)

    def drop_window(self) -> None:
        """Unmap the append window (what it holds stays in the file)."""
        window = self.window
        self.fast_end = 0
        if window is not None:
            self.window, self.window_end = None, 0
            window.close()

    def release_reserved(self) -> None:
        """Cut the reserved space off the end of the log."""
        self.drop_window()
        if self.reserved_end > self.end and self.fd is not None:
            self._files.truncate(self.fd, self.end)
        self.reserved_end = 0

    def cut_tail(self) -> None:
        """Remove whatever a failed write left past the last good frame."""
        assert self.fd is not None
        self.drop_window()
        self._files.truncate(self.fd, self.end)
        self.tail_dirty = False
        self.reserved_end = 0

    def cut_tail_after_failure(self) -> None:
        self.tail_dirty = True
        try:
            self.cut_tail()
        except OSError:
            logger.exception("aiokv: could not truncate %s after a failed write; "
                             "will retry before the next write", self._name)
