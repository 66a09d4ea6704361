"""Output folders: one writer per folder, built beside it, swapped in only when complete.

Every command that writes a folder goes through :class:`OutputFolder` (or, for the resumable feature store
written in place, :class:`FolderLock` alone), the way git updates a ref and SQLite a database:

1. **Refuse what would eat an input**: an ``--out`` that is, contains or lies inside an input of the same
   command (:func:`check_disjoint`) is refused before anything is touched.
2. **Lock**: an exclusive ``fcntl.flock`` on ``.<name>.lock`` beside the folder, holding the owner's pid, host,
   start time and command. A second writer ends with a one-line error naming that owner. The kernel drops the
   lock when its process dies (``kill -9`` included), so a stale lock file is simply taken over.
3. **Clean the debris** of killed writers of the same folder (``.<name>.tmp-*``, ``.<name>.old-*``): nobody
   else can own them while the lock is held. An old folder set aside by a swap that was killed half-way is put
   back first.
4. **Build beside**: the new folder is written into ``.<name>.tmp-XXXX`` in the same parent (the same
   filesystem).
5. **Swap in when complete**: ``renameat2(RENAME_EXCHANGE)`` exchanges the two folders in one step (a reader
   sees the old folder or the new one, never a mix or nothing); where the filesystem cannot exchange, two
   renames whose middle state step 3 repairs. On any error or interrupt the new folder is dropped and the old
   one is untouched.

Folders and files are created with the modes the umask gives (0755 / 0644 by default), so a run folder can be
shared by a team.

Examples
--------
>>> from pathlib import Path
>>> with OutputFolder("runs/concepts", inputs=["runs/features"]) as tmp:
...     _ = (tmp / "summary.json").write_text("{}")        # swapped in when the block ends cleanly
>>> sorted(p.name for p in Path("runs").iterdir())     # no temp folder or lock file left beside it
['concepts']
>>> with OutputFolder("runs/concepts") as tmp:
...     pass
Traceback (most recent call last):
...
mmconcepts.errors.MMConceptsError: output folder runs/concepts is not empty: pass --overwrite to replace it or ...
>>> with OutputFolder("runs/concepts", overwrite=True) as tmp:
...     raise RuntimeError("failed half-way")             # a failed run leaves the old folder as it was
Traceback (most recent call last):
...
RuntimeError: failed half-way
>>> [p.name for p in Path("runs/concepts").iterdir()]
['summary.json']
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from mmconcepts.errors import MMConceptsError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def umask() -> int:
    """The process's umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p`` with a one-line error (a file in the way, a read-only or full disk, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MMConceptsError(f"cannot create the folder {path}: a file of that name is in the way; choose "
                              "another path") from None
    except OSError as exc:
        raise os_error(exc, f"cannot create the folder {path}") from None
    return path


def os_error(exc: OSError, doing: str) -> MMConceptsError:
    """A one-line :class:`MMConceptsError` for an :class:`OSError`: what failed, why, and what to do."""
    fixes = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
             errno.EACCES: "check the permissions or write elsewhere", errno.EPERM: "check the permissions or "
             "write elsewhere", errno.EROFS: "the filesystem is read-only: write elsewhere",
             errno.ENOTDIR: "a file stands where a folder is expected: choose another path",
             errno.EISDIR: "a folder stands where a file is expected: choose another path",
             errno.ELOOP: "a symbolic link loops: fix or remove it", errno.ENAMETOOLONG: "use a shorter path"}
    fix = fixes.get(exc.errno, "check the path and try again")
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in doing else ""
    return MMConceptsError(f"{doing}{where}: {exc.strerror or exc}; {fix}")


def check_disjoint(out: str | os.PathLike, inputs, what: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (paths; ``None`` entries skipped).

    Examples
    --------
    >>> check_disjoint("runs/concepts", ["runs/features", None])
    >>> check_disjoint("runs/features/concepts", ["runs/features"])
    Traceback (most recent call last):
    ...
    mmconcepts.errors.MMConceptsError: --out runs/features/concepts lies inside the input runs/features: ...
    """
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source:
            raise MMConceptsError(f"{what} {out} is an input of this command ({given}): choose another {what}")
        if source in target.parents:
            raise MMConceptsError(f"{what} {out} lies inside the input {given}: choose a {what} outside it")
        if target in source.parents:
            raise MMConceptsError(f"{what} {out} contains the input {given}: choose a {what} that does not")


def _lock_file(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _owner_text(file: Path) -> str:
    try:
        owner = json.loads(file.read_text(encoding="utf-8"))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner["started"]))
        return f"pid {owner['pid']} on {owner['host']} (started {started}: {owner['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


class FolderLock:
    """An exclusive lock on writing ``folder``: ``.<name>.lock`` beside it, locked with ``fcntl.flock``.

    Reentrant in one process (a command that locks ``out`` may call a library function that locks it again).
    The lock file holds the owner (pid, host, start, command) for the error a second writer gets; it is removed
    on release. A lock whose process died is free again (the kernel drops ``flock`` locks with the process).

    Parameters
    ----------
    folder : the folder about to be written.
    """

    _held: dict[Path, list] = {}  # folder -> [fd, depth]: this process's locks (reentrancy)

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(os.path.abspath(folder))
        self.file = _lock_file(self.folder)

    def acquire(self) -> FolderLock:
        import fcntl

        held = FolderLock._held.get(self.folder)
        if held is not None:
            held[1] += 1
            return self
        make_dirs(self.folder.parent)
        for _ in range(10):
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as exc:
                raise os_error(exc, f"cannot lock {self.folder} for writing") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise MMConceptsError(f"{self.folder} is being written by {_owner_text(self.file)}; wait for it "
                                      "to finish or stop it, or choose another --out") from None
            try:  # the previous owner may have removed the file between our open and our lock: lock the new one
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - ten races in a row
            raise MMConceptsError(f"cannot lock {self.folder}: its lock file keeps changing; try again")
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                 "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(owner).encode())
        except OSError:
            pass  # a full disk: the lock holds all the same, only the owner's name is missing
        FolderLock._held[self.folder] = [fd, 1]
        return self

    def release(self) -> None:
        import fcntl

        held = FolderLock._held.get(self.folder)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del FolderLock._held[self.folder]
        try:
            os.unlink(self.file)
        except OSError:
            pass
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[0])

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _debris(folder: Path, kind: str) -> list[Path]:
    prefix = f".{folder.name}.{kind}-"
    try:
        return [p for p in folder.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []


def clean_debris(folder: str | os.PathLike) -> None:
    """Remove what killed writers of ``folder`` left beside it; call with the folder's lock held.

    A folder set aside by a swap killed between its two renames (``.<name>.old-*`` while ``folder`` is
    missing) is put back: the old data is never lost."""
    folder = Path(os.path.abspath(folder))
    for old in sorted(_debris(folder, "old")):
        if not os.path.lexists(folder):
            os.rename(old, folder)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in _debris(folder, "tmp"):
        shutil.rmtree(tmp, ignore_errors=True)


def new_temp_dir(folder: str | os.PathLike) -> Path:
    """A new empty folder ``.<name>.tmp-XXXX`` beside ``folder`` (same filesystem), with the umask's mode."""
    import tempfile

    folder = Path(folder)
    make_dirs(folder.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        os.chmod(tmp, 0o777 & ~umask())
    except OSError as exc:
        raise os_error(exc, f"cannot write to {folder.parent}") from None
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Put the finished folder ``tmp`` at ``out``, replacing a folder there: one atomic exchange where the
    filesystem allows it, else two renames (see :func:`clean_debris` for the repair of the middle state)."""
    tmp, out = Path(tmp), Path(out)
    try:
        if not os.path.lexists(out):
            os.rename(tmp, out)
        elif _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        else:
            old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise os_error(exc, f"cannot move the new {out.name} into place") from None
    return out


class OutputFolder:
    """Write the folder ``out`` beside it and swap it in when the ``with`` block ends without an error.

    Parameters
    ----------
    out : the folder to write.
    overwrite : replace a non-empty ``out`` (else it is refused with a one-line error).
    inputs : paths this command reads; ``out`` may not be, contain or lie inside any of them.
    what : the name of the option in errors (``--out``).

    The ``with`` statement yields the temp folder to write into. An exception or a kill leaves ``out`` as it was
    (a killed run's temp folder is removed by the next writer of ``out``); :meth:`swap` may be called inside the
    block to swap early.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, inputs=(), what: str = "--out"):
        self.out = Path(out)
        self.overwrite = overwrite
        self.inputs = tuple(inputs)
        self.what = what
        self.lock = FolderLock(self.out)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        check_writable_target(self.out, self.overwrite, self.what, self.inputs)
        self.lock.acquire()
        try:
            clean_debris(self.out)
            check_writable_target(self.out, self.overwrite, self.what, self.inputs)
            self.tmp = new_temp_dir(self.out)
        except BaseException:
            self.lock.release()
            raise
        return self.tmp

    def swap(self) -> Path:
        """Swap the temp folder in now (the block's end then does nothing more)."""
        if self.tmp is not None:
            swap_in(self.tmp, self.out)
            self.tmp = None
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.swap()
        finally:
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
            self.lock.release()


def check_writable_target(out: str | os.PathLike, overwrite: bool, what: str = "--out", inputs=()) -> None:
    """The checks before writing ``out``: not an input, not a file, empty unless ``overwrite``."""
    out = Path(out)
    check_disjoint(out, inputs, what)
    if os.path.lexists(out) and not out.is_dir():
        raise MMConceptsError(f"{what} {out} exists and is not a folder: choose another {what}")
    try:
        busy = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        raise os_error(exc, f"cannot read {out}") from None
    if busy and not overwrite:
        raise MMConceptsError(f"output folder {out} is not empty: pass --overwrite to replace it or choose "
                              f"another {what}")
