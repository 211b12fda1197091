"""Temp files of atomic writes, and the removal of those that killed writers left.

Every atomic write in odenet (a study's results folder, the reference-solution cache)
writes ``.tmp-<pid>-…`` beside its target and renames it into place; a writer killed
mid-write leaves its temp file, which :func:`clean_temp_files` removes later.  A module
of its own because both :mod:`odenet.problems` and :mod:`odenet.studies.sweep` use it
and the second imports the first.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

TMP_PREFIX = ".tmp-"
# a temp file this old is stale even if a process with its pid exists (pid reuse)
TMP_STALE_S = 600.0


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
    """``(fd, path)`` of a new ``.tmp-<pid>-…`` file in ``folder`` for an atomic write.

    With the user's file mode: ``mkstemp`` creates 0600, so a results folder or a
    reference cache shared with others became unreadable to them once renamed in place.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=suffix)
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

    A temp file is stale when the process in its name is gone, when its name has no
    pid (written by an older odenet), or when it is older than ten minutes.
    """
    removed = []
    now = time.time()
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-", p.name)
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        stale = m is None or age > TMP_STALE_S or not pid_alive(int(m.group(1)))
        if m is not None and int(m.group(1)) == os.getpid() and age <= TMP_STALE_S:
            stale = False
        if stale:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
