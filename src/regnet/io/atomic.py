"""Atomic writes (a temporary file beside the target, then a rename), folder locks, and files'
checksums."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from regnet.errors import fail

TMP_MARK = "tmp-"  # temporary names: ".<stem>.tmp-<random><suffixes>"


def sha256(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in the target's folder; rename it to ``path`` on success.

    The temporary name keeps the target's suffixes, so writers that pick a format by extension
    (SimpleITK, torch, matplotlib) still work. A failed write leaves no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.{TMP_MARK}", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(exc.errno, "no space left on device (nothing was written)",
                          str(path)) from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files that a killed writer left under ``folder``; return how many."""
    stale = list(Path(folder).rglob(f".*.{TMP_MARK}*"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return len(stale)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "regnet", wait: bool = False):
    """Hold an exclusive lock on ``folder`` (a ``.lock`` file in it); without ``wait``, refuse
    at once when another process holds it.

    The operating system frees the lock when its holder dies, so a killed run never blocks
    the next one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise fail(folder, f"another {what} is writing into this folder; wait for it or "
                       "choose another output folder") from exc
        yield
    finally:
        handle.close()
