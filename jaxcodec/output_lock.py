"""One run per output: a lock file in each directory a command writes (a training workdir, a shard set, an encode
or decode folder, an eval report folder), so that a second run on the same output is refused in one line instead
of interleaving with the first, or replacing its checkpoints, logs and shards. No jax and no torch: the trainer
and the PyTorch teachers both take it.

The lock file (`.jaxcodec.lock`) holds JSON {host, pid, command, started}. It appears complete: it is written
under a temporary name and hard-linked to its own name, which fails, atomically, when the name exists (also on
NFS). Its holder keeps an exclusive `flock` on it for the whole run; the kernel drops that when the process ends,
however it ends. So a lock left on this host by a process that no longer holds the flock is stale (its run was
killed): it is taken over with a warning. A lock taken on another host cannot be checked from here (the process
is not ours to look up, and flock does not reach across hosts on every file system): it is refused, and the
message says to delete the file if that run has ended. The name starts with '.', which every scan of an output
folder skips; the holder removes the file when its run ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from jaxcodec import atomic

LOCK_NAME = ".jaxcodec.lock"
# A look at a lock and the move that follows (take it over, or create it after it was released) can race with
# another process doing the same; each lost race means looking again. More than a few means something keeps
# taking and dropping it: give up rather than spin.
ACQUIRE_ATTEMPTS = 3
MAX_LOCK_BYTES = 1 << 16  # a lock file is one short JSON line; more is not a lock this module wrote
COMMAND_CHARS = 300  # of the holder's command line kept in the lock: enough to recognise it in a one-line error


class OutputLockError(RuntimeError):
    """The output cannot be this run's: another run holds it (the message names the holder and what to do), or it
    is not a folder."""


def describe(holder: dict) -> str:
    """'pid 1234 on host gpu-3 (jaxcodec train …, started 2026-11-30T12:00:00Z)' from a lock file's contents."""
    if not holder:
        return "an unknown process (the lock file is unreadable)"
    details = ", ".join(x for x in (holder.get("command"), holder.get("started") and f"started {holder['started']}")
                        if x)
    return f"pid {holder.get('pid')} on host {holder.get('host')}" + (f" ({details})" if details else "")


@contextlib.contextmanager
def held(directory: str | os.PathLike, name: str = LOCK_NAME, command: str | None = None) -> Iterator[Path]:
    """Holds the lock `directory/name` (creating the directory) until the block ends; raises OutputLockError when
    another live run holds it. `command` is what the lock says is running (default: this process's argv). A
    directory this call created is removed again when the block leaves it empty (a run that wrote nothing)."""
    directory = Path(directory)
    created = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputLockError(f"{directory} is a file, not a folder: give an output folder") from None
    path = directory / name
    fd = _acquire(path, {"host": socket.gethostname(), "pid": os.getpid(),
                         "command": (command or _command_line())[:COMMAND_CHARS],
                         "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    try:
        yield path
    finally:
        try:
            if _names(fd, path):  # still ours: never remove a lock another process has since created
                path.unlink()
        finally:
            os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                directory.rmdir()


def _command_line() -> str:
    """This process's command as typed: `python -m jaxcodec train …` reads `jaxcodec train …`."""
    program = Path(sys.argv[0])
    name = program.parent.name if program.name == "__main__.py" else program.name
    return " ".join([name, *sys.argv[1:]])


def live_holder(path: str | os.PathLike) -> dict | None:
    """The holder of the lock file `path` when it may still be running (held on this host, or taken on another
    host, which cannot be checked), else None (no lock, or a stale one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:  # not a lock file this module wrote (e.g. a symlink): nobody known, but not free either
        return {}
    try:
        holder = _read(fd)
        if _elsewhere(holder) or _busy(fd):
            return holder
        return None
    finally:
        os.close(fd)


def _acquire(path: Path, record: dict) -> int:
    for _ in range(ACQUIRE_ATTEMPTS):
        fd = _publish(path, record, replace=False)
        if fd is not None:
            return fd
        try:
            existing = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:  # released between our attempt and this look: try again
            continue
        except OSError as err:  # e.g. a symlink planted at the name
            raise OutputLockError(f"{path} exists but cannot be opened as a lock file ({err.strerror}); "
                                  f"remove it if no jaxcodec run uses {path.parent}") from None
        try:
            holder = _read(existing)
            if _elsewhere(holder):
                raise OutputLockError(
                    f"{path.parent} is in use by {describe(holder)}, which cannot be checked from "
                    f"{record['host']}; wait for it, or delete {path} if that run has ended")
            if _busy(existing):
                raise OutputLockError(f"{path.parent} is in use by {describe(holder)}; wait for it to finish, "
                                      f"or use another output")
            if not _names(existing, path):  # another process took it over meanwhile: look again
                continue
            # Holding the stale file's flock, no other process can be taking it over at the same time; the
            # replacement is renamed over it, so the name never goes missing in between.
            fd = _publish(path, record, replace=True)
            warnings.warn(f"{path.parent}: taking over the lock left by {describe(holder)}, which has ended",
                          stacklevel=4)
            return fd
        finally:
            os.close(existing)
    raise OutputLockError(f"{path.parent}: its lock kept changing hands over {ACQUIRE_ATTEMPTS} attempts; "
                          f"another run is starting on it")


def _publish(path: Path, record: dict, replace: bool) -> int | None:
    """Writes `record` to a new file, flocks it and puts it at `path` (replacing what is there, or only if nothing
    is: then None when something is). Returns the descriptor that holds the flock."""
    fd, tmp = atomic.open_temporary(path)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file nobody else has opened: cannot be busy
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                os.close(fd)
                return None
        return fd
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _read(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, MAX_LOCK_BYTES, 0))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _elsewhere(holder: dict) -> bool:
    return bool(holder.get("host")) and holder["host"] != socket.gethostname()


def _busy(fd: int) -> bool:
    """Whether a running process holds the lock: its flock is held. When it is not, `fd` now holds it (until
    closed), so no one else can take the stale lock over meanwhile. The flock decides, not the pid: a restarted
    container runs again on the same host name with the same small pids."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _names(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)
