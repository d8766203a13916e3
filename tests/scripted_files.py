"""The test double of the file seam: every call recorded, any call scripted.

``ScriptedFiles`` makes every call on an inner ``FileSystem`` (the real one,
or a model of one) with two things added:

* every call is recorded (``calls``: which, on which thread, when, how many
  bytes, during which step of the test), so a test can check what ran where;
* a test scripts what a call does before it is made: fail it
  (``fail``), hold it until released (``hold``), or run any function
  (``script``) that may raise, wait, answer in the call's place (a short
  write, a mapping refused), or make the call itself (``real``) and do
  something after it.

Scripts are matched by call name (or ``ANY_CALL``) and an optional ``when``
test of the call (its thread, its arguments); ``times`` limits how often one
acts. Tests write one of these instead of a FileSystem subclass per file; a
test that needs a model of the disk passes it as the inner file system.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer

from aiokv import AioKV
from aiokv._engine import Engine
from aiokv._files import FileSystem, Permissions, Window

WAIT = 10.0
"""Longest a held call waits for its release (a test that forgets fails)."""


@dataclass(frozen=True)
class Call:
    name: str
    thread: int
    time: float
    size: int = 0
    args: tuple[Any, ...] = ()
    thread_name: str = ""
    doing: str = ""
    """What the test was doing (``ScriptedFiles.doing`` when the call was made)."""


class Proceed:
    """What a script returns to let the real call be made."""


PROCEED = Proceed()

ANY_CALL = "*"
"""The name of a script that applies to every call (its ``when`` may pick)."""

COMPOSITE_CALLS = frozenset({"write_synced", "give_permissions", "lock"})
"""Calls that ``FileSystem`` makes of other calls of the seam: made as it
makes them, so that those are recorded and scripted too."""


@dataclass
class Script:
    """What a scripted call does instead of, or before, the real one."""

    name: str
    action: Callable[[Call], object]
    when: Callable[[Call], bool] | None = None
    times: int | None = None
    acted: int = 0
    happened: threading.Event = field(default_factory=threading.Event)
    """Set once the script has acted."""

    def applies(self, call: Call) -> bool:
        if self.name not in (call.name, ANY_CALL):
            return False
        if self.times is not None and self.acted >= self.times:
            return False
        return self.when is None or self.when(call)


@dataclass
class Gate:
    """A held call: ``reached`` is set when one arrives; ``release()`` lets it go."""

    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    """Raised by the held call once released, instead of making it."""

    def release(self, error: BaseException | None = None) -> None:
        self.error = error
        self.released.set()

    def wait_reached(self, timeout: float = WAIT) -> None:
        assert self.reached.wait(timeout), "no call reached the gate"


def in_thread(prefix: str) -> Callable[[Call], bool]:
    """A ``when`` for calls made on a thread whose name starts with ``prefix``."""
    return lambda call: call.thread_name.startswith(prefix)


def nth(n: int, when: Callable[[Call], bool]) -> Callable[[Call], bool]:
    """A ``when`` for the ``n``-th call (from 1) that ``when`` accepts."""
    seen = itertools.count(1)
    return lambda call: when(call) and next(seen) == n


class ScriptedFiles(FileSystem):
    """Every call of the seam recorded, scripted, then made on ``inner``."""

    def __init__(self, inner: FileSystem | None = None, *, mapping: bool = True) -> None:
        self.inner = FileSystem() if inner is None else inner
        """Where a call is made once its script lets it: the real file
        system, or a model of one."""
        self.calls: list[Call] = []
        self.mapping = mapping
        """False: appends at "flush" go through write(2) instead of a map."""
        self.doing = ""
        """What the test is doing now: a label it sets, recorded with each call."""
        self._scripts: list[Script] = []
        self._lock = threading.Lock()

    # -- scripting ----------------------------------------------------------

    def script(self, name: str, action: Callable[[Call], object], *,
               when: Callable[[Call], bool] | None = None, times: int | None = None) -> Script:
        """Run ``action`` before each ``name`` call (``ANY_CALL``: each call)
        that ``when`` accepts; the first script that applies acts, alone.

        It may raise (the call fails, having done nothing) or wait; whatever
        it returns other than PROCEED is the call's result, and the real
        call is not made (the action may make it: ``real``).
        """
        script = Script(name, action, when, times)
        with self._lock:
            self._scripts.append(script)
        return script

    def fail(self, name: str, error: BaseException, *,
             when: Callable[[Call], bool] | None = None, times: int | None = None) -> Script:
        """Make ``name`` calls raise ``error`` (doing nothing)."""
        def raise_it(call: Call) -> object:
            raise error
        return self.script(name, raise_it, when=when, times=times)

    def hold(self, name: str, *, when: Callable[[Call], bool] | None = None,
             times: int | None = 1) -> Gate:
        """Hold the next ``name`` call (``times`` of them) until the gate is released."""
        gate = Gate()

        def held(call: Call) -> object:
            gate.reached.set()
            assert gate.released.wait(WAIT), f"{name} held for longer than {WAIT} s"
            if gate.error is not None:
                raise gate.error
            return PROCEED
        self.script(name, held, when=when, times=times)
        return gate

    def unscript(self, script: Script | None = None) -> None:
        """Remove one script, or all of them."""
        with self._lock:
            self._scripts = [] if script is None else [s for s in self._scripts
                                                      if s is not script]

    # -- records ------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return [call.name for call in self.calls]

    def clear_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    # -- making calls --------------------------------------------------------

    def real(self, name: str, *args: Any) -> Any:
        """Make the call ``name`` as if no script applied to it, unrecorded.

        For an action that makes the call itself (with other arguments, or
        to do something after it). A composite call is made as
        ``FileSystem`` makes it: its parts go through this double.
        """
        if name in COMPOSITE_CALLS:
            return getattr(FileSystem, name)(self, *args)
        return getattr(self.inner, name)(*args)

    def _run(self, name: str, *args: Any, size: int = 0) -> Any:
        current = threading.current_thread()
        call = Call(name, current.ident or 0, time.monotonic(), size, args, current.name,
                    self.doing)
        with self._lock:
            self.calls.append(call)
            script = next((s for s in self._scripts if s.applies(call)), None)
            if script is not None:
                script.acted += 1
        if script is not None:
            script.happened.set()
            answer = script.action(call)
            if answer is not PROCEED:
                return answer
        return self.real(name, *args)

    # -- the seam -----------------------------------------------------------

    def can_map(self, path: str) -> bool:
        return self.mapping and bool(self._run("can_map", path))

    def mode(self, path: str) -> int | None:
        return self._run("mode", path)  # type: ignore[no-any-return]

    def read(self, path: str) -> bytes | None:
        return self._run("read", path)  # type: ignore[no-any-return]

    def open_append(self, path: str) -> int:
        return self._run("open_append", path)  # type: ignore[no-any-return]

    def create(self, path: str) -> int:
        return self._run("create", path)  # type: ignore[no-any-return]

    def permissions(self, fd: int) -> Permissions:
        return self._run("permissions", fd)  # type: ignore[no-any-return]

    def give_permissions(self, fd: int, wanted: Permissions) -> None:
        self._run("give_permissions", fd, wanted)

    def write(self, fd: int, data: Buffer) -> int:
        return self._run("write", fd, data,  # type: ignore[no-any-return]
                         size=len(memoryview(data)))

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return self._run("pwrite", fd, data, offset,  # type: ignore[no-any-return]
                         size=len(data))

    def write_synced(self, fd: int, data: bytes | memoryview) -> None:
        self._run("write_synced", fd, data, size=len(data))

    def allocate(self, fd: int, offset: int, length: int) -> None:
        self._run("allocate", fd, offset, length, size=length)

    def map(self, fd: int, offset: int, length: int) -> Window:
        return self._run("map", fd, offset, length,  # type: ignore[no-any-return]
                         size=length)

    def fsync(self, fd: int) -> None:
        self._run("fsync", fd)

    def truncate(self, fd: int, length: int) -> None:
        self._run("truncate", fd, length)

    def close(self, fd: int) -> None:
        self._run("close", fd)

    def replace(self, source: str, target: str) -> None:
        self._run("replace", source, target)

    def link(self, source: str, target: str) -> bool:
        return self._run("link", source, target)  # type: ignore[no-any-return]

    def remove(self, path: str) -> None:
        self._run("remove", path)

    def listdir(self, directory: str) -> list[str]:
        return self._run("listdir", directory)  # type: ignore[no-any-return]

    def fsync_dir(self, directory: str) -> None:
        self._run("fsync_dir", directory)

    def lock(self, path: str) -> int | None:
        return self._run("lock", path)  # type: ignore[no-any-return]

    def lock_holder(self, path: str) -> int | None:
        return self._run("lock_holder", path)  # type: ignore[no-any-return]

    def lock_open_file(self, fd: int) -> bool:
        return self._run("lock_open_file", fd)  # type: ignore[no-any-return]

    def same_file(self, fd: int, path: str) -> bool:
        return self._run("same_file", fd, path)  # type: ignore[no-any-return]

    def unlock(self, fd: int) -> None:
        self._run("unlock", fd)


def store_on(files: FileSystem, path: str, **options: object) -> AioKV:
    """An AioKV whose engine performs its file effects through ``files``."""
    store = AioKV(path, **options)  # type: ignore[arg-type]
    store._engine = Engine(path, files=files, **options)  # type: ignore[arg-type]
    return store
