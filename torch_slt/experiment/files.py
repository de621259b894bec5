"""Atomic file writes for checkpoints, run folders and tickets.

Every file a run reads back (a checkpoint, a mask, a row list, a ticket) is written to ``<name>.tmp``
and renamed over the target, so a kill leaves the old file or the new one, never half of one. A write
that fails (a full disk: ``OSError(ENOSPC)``, or any other error) removes its ``.tmp`` before the error
propagates, so no stray partial file is left next to the good one. A process killed with SIGKILL in
the middle of a write cannot clean up; :func:`remove_stale_temporaries` does it when the run resumes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

#: Suffix of a file being written.
TMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path``; on any failure ``tmp`` is removed."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``*.tmp`` files a killed write left directly in ``folder``; returns them."""
    folder = Path(folder)
    stale = [p for p in folder.glob("*" + TMP_SUFFIX) if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def brief(err: BaseException, limit: int = 200) -> str:
    """``"Type: first line of the message"``, cut at ``limit``: torch's and pickle's errors run to many
    lines, and a command-line error is one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
