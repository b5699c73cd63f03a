"""Writing a file on the device atomically, readable by its owner only.

The content goes to a temporary file next to the destination (``mkstemp``: mode 0600),
is flushed and ``fsync``-ed, then renamed over the destination: a reader sees the old
file or the new one, never half of one, and a failed write leaves no temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

__all__ = ["private_file"]


@contextmanager
def private_file(path: Path, mode: Literal["w", "wb"], suffix: str = ".tmp") -> Iterator[IO[Any]]:
    """An open temporary file that replaces ``path`` when the block ends without error.

    Args:
        path: the destination; its folder must exist.
        mode: ``"w"`` (UTF-8 text) or ``"wb"``.
        suffix: the temporary file's suffix (some writers look at it).

    Example:
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = Path(folder.name) / "export.json"
        >>> with private_file(path, "w") as handle:
        ...     _ = handle.write("{}")
        >>> path.read_text(), oct(path.stat().st_mode & 0o777)
        ('{}', '0o600')
        >>> folder.cleanup()
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
