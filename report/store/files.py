"""File-system care shared by the results store and the command: durable writes, writable folders, stale temps.

- `fsync_file` / `fsync_dir`: data and the directory entry reach the disk before a rename publishes them, so
  after a power cut a published file is whole (never empty) and `--resume` can trust what it finds.
- `check_writable_dir`: --out and --site are checked before anything is computed (a file in the way, a name
  too long, a read-only or full file system), by creating and removing a probe file where the folder will be.
- `temp_name` / `temp_dir` / `clean_stale_temps`: a temporary is removed by the process that made it; another
  process removes it only when no process holds its lock (the writer holds an flock on it while it exists) and
  either it is older than STALE_AFTER_S or it was made on this machine by a process that is gone. A writer on
  another machine or in another process namespace sharing --out (as shards do) has a process id we cannot see,
  so its young temporaries are never taken for a dead run's.
- `read_user_text`: a user's text file (a families file): a regular file, UTF-8 with or without a BOM.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from report.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; temporaries are then removed by age alone
    fcntl = None

MAX_USER_FILE_BYTES = 1 << 20  # a families file is a few KB; this refuses /dev/zero and mistakes alike
# A temporary lives seconds (it is written after the computing); an hour untouched and unlocked is a dead writer's.
STALE_AFTER_S = 3600
_TEMP = re.compile(r"^\..+\.(\d+)\.([0-9a-f]+)\.tmp$")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the data files themselves are synced
    finally:
        os.close(fd)


def _host() -> str:
    """8 hex digits naming this machine, in every temporary's name."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_name(final: str) -> str:
    """A hidden sibling name for `final` that says which process on which machine writes it."""
    return f".{final}.{os.getpid()}.{_host()}{secrets.token_hex(4)}.tmp"


def lock(fd: int) -> None:
    """Hold an exclusive flock on an open temporary until it is closed (so other processes leave it alone)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without flock: the age rule alone protects this temporary


def make_temp_dir(parent: Path, final: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = parent / temp_name(final)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(parent))


@contextmanager
def temp_dir(parent: Path, final: str) -> Iterator[Path]:
    """A fresh temporary folder beside `final`, locked while the block runs and removed after it unless the block
    renamed it into place."""
    path = make_temp_dir(parent, final)
    fd = os.open(path, os.O_RDONLY)
    try:
        lock(fd)
        yield path
    finally:
        os.close(fd)
        if path.exists() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _locked(path: Path) -> bool:
    """Whether another open file holds a lock on `path` (unknown counts as locked)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _age(path: Path) -> float:
    """Seconds since anything in `path` (a file, or a folder and what it holds) was last changed."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [*dirnames, *filenames]:
                try:
                    newest = max(newest, (Path(dirpath) / name).lstat().st_mtime)
                except OSError:
                    continue
    return time.time() - newest


def is_stale(path: Path) -> bool:
    """A temporary another process may remove: unlocked, and older than STALE_AFTER_S or made on this machine by
    a process that is gone (names without a machine, from older versions, go by age alone)."""
    match = _TEMP.match(path.name)
    if not match or int(match.group(1)) == os.getpid():
        return False  # not a temporary, or our own: we remove ours ourselves
    try:
        if _locked(path):
            return False
        if _age(path) > STALE_AFTER_S:
            return True
    except OSError:
        return False
    here = len(match.group(2)) == 16 and match.group(2)[:8] == _host()
    return here and not _pid_alive(int(match.group(1)))


def clean_stale_temps(root: Path) -> list[Path]:
    """Remove the stale temporaries under `root` (`is_stale`); return what was removed."""
    removed = []
    if not Path(root).is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if is_stale(path):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        dirnames[:] = [d for d in dirnames if not _TEMP.match(d)]
    return removed


def check_writable_dir(folder: Path, option: str) -> None:
    """Fail now, in one line, if `folder` cannot be created or written; leaves nothing behind."""
    folder = Path(folder)
    max_name = 255
    for part in folder.parts:
        if len(os.fsencode(part)) > max_name:
            raise UserError(f"{option} {folder}: the name {part[:40]!r}... is longer than {max_name} bytes")
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise UserError(f"{option} {folder}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {folder}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=temp_name("write-probe"))
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise UserError(f"{option} {folder}: cannot write in {existing} ({err.strerror or err})") from None


def read_user_text(path: Path, what: str) -> str:
    """The text of a user's file: a regular file of at most 1 MiB, UTF-8 (a leading BOM is dropped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(MAX_USER_FILE_BYTES + 1)
    if len(data) > MAX_USER_FILE_BYTES:
        raise UserError(f"{what} {path} is larger than {MAX_USER_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None
