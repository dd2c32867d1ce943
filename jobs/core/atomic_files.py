"""Files written whole or not at all: a reader, or a crash, sees the old content or the new, never half.

Kept free of heavy imports (no torch): the report and `python -m jobs.outputs.compare` write with it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, text: str, durable: bool = False) -> None:
    """Write to a unique temp name beside `path`, then rename over it.

    durable: also fsync the file before the rename and the folder after it, so the new
    content survives a power cut once this returns (checkpoint pointers need that).
    """
    path = Path(path)
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(staging, 0o644)  # mkstemp's 0600 would hide the file from anyone else on the machine
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
