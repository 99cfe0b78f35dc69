"""Atomic file writes: the content goes to a temporary name in the target's folder, which then
replaces the target in one ``os.replace``, so a failed write (a full disk, a crash) leaves the
old file or none, never a truncated one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["TEMP_SUFFIX", "write_atomic"]

# Temporary files are ``.<name>.<random>.tmp`` beside the target (hidden, so never listed as
# images); a writer killed mid-file leaves one behind, which ``hfsti segment --overwrite`` removes.
TEMP_SUFFIX = ".tmp"


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Create or replace ``path`` with what ``write(f)`` writes to the binary file ``f``.

    Parent folders are created. Any OSError (creating the folder or the file, writing, closing,
    renaming) becomes a one-line ValueError naming ``path``; the temporary file is removed.
    Permissions are those of a plain ``open(path, "wb")`` (the umask applies).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {_reason(e)}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ValueError(f"cannot write {path}: {_reason(e)}") from e
        raise
    return path
