"""/dev/shm as a place for many small files, where the machine has one with room.

The tests' temporary folders and the benchmark's registry storage are tens of
thousands of small files: on a disk, making and removing them costs seconds
of the kernel's CPU (and SQLite's fsyncs wait on it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

SHM: Final = Path("/dev/shm")


def memory_folder(room_bytes: int) -> Path | None:
    """/dev/shm if it is a writable folder with more than ``room_bytes`` free, else None."""
    if SHM.is_dir() and os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free > room_bytes:
        return SHM
    return None


__all__ = ["SHM", "memory_folder"]
