"""Durable file steps shared by the stores that keep files (blobs, archive, audit
segments): a rename or a new file is only on disk once its directory is fsynced."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
