"""Temp files of atomic writes, and the removal of those that killed writers left.

Every atomic write in odenet (a study's results folder, the reference-solution cache)
writes ``.tmp-<pid>-h<host>-…`` beside its target and renames it into place; a writer
killed mid-write leaves its temp file, which :func:`clean_temp_files` removes later.  A module
of its own because both :mod:`odenet.problems` and :mod:`odenet.studies.sweep` use it
and the second imports the first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"
# a temp file this old is stale even if a process with its pid exists (pid reuse)
TMP_STALE_S = 600.0


@functools.cache
def host_tag() -> str:
    """8 hex digits naming this machine in temp-file names (a hash: host names may
    hold the ``-`` that separates the name's fields)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def writer_prefix() -> str:
    """``.tmp-<pid>-h<host>-``: the start of this process's temp-file names.  The host
    tells :func:`clean_temp_files` on another machine sharing the folder (NFS) that the
    pid is not one it can look up."""
    return f"{TMP_PREFIX}{os.getpid()}-h{host_tag()}-"


def umask() -> int:
    """The process's umask, read without changing it."""
    # /proc avoids os.umask's set-and-restore, which races with other threads
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a plain ``open(…, "w")`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~umask()


def temp_file(folder: Path, suffix: str = "") -> tuple[int, str]:
    """``(fd, path)`` of a new temp file (:func:`writer_prefix`) in ``folder`` for an
    atomic write.

    With the user's file mode: ``mkstemp`` creates 0600, so a results folder or a
    reference cache shared with others became unreadable to them once renamed in place.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=writer_prefix(), suffix=suffix)
    with contextlib.suppress(OSError):
        os.fchmod(fd, file_mode())
    return fd, tmp


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temp files in ``folder`` left by killed writers; returns those removed.

    A temp file is stale when it is older than ten minutes, when its name has no pid
    (written by an older odenet), or when it was written on this machine (its host tag
    is ours, or it has none: an older odenet) by a process that is gone.  A young file
    of another host is left alone: its pid means nothing here (a results folder on NFS
    shared by machines), and a live writer there would lose its file mid-write.
    """
    removed = []
    now = time.time()
    me = os.getpid()
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-(?:h([0-9a-f]{8})-)?", p.name)
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        if m is None or age > TMP_STALE_S:
            stale = True
        elif m.group(2) is not None and m.group(2) != host_tag():
            stale = False
        else:
            pid = int(m.group(1))
            stale = pid != me and not pid_alive(pid)
        if stale:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
