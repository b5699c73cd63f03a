"""An output directory that a failed command leaves as it found it.

:func:`output_dir` creates the directory (and missing parents) for a command and, when
the command fails, removes everything it created: the folders it made, or, in a folder
that already existed, the entries that were not there before. A failure after the run
became resumable (``keep_if`` says so, e.g. a checkpoint exists) keeps the directory.

Example:
    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> try:
    ...     with output_dir(base / "a" / "run") as run:
    ...         _ = (run / "run.db").write_text("x")
    ...         raise RuntimeError("bad input")
    ... except RuntimeError:
    ...     pass
    >>> sorted(p.name for p in base.iterdir())
    []
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fedpers.privacy.errors import ConfigError

__all__ = ["output_dir"]


def _missing_top(path: Path) -> Path | None:
    """The outermost ancestor of ``path`` (or ``path``) that does not exist yet."""
    top = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        top = candidate
    return top


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def output_dir(path: Path, *, keep_if: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Create ``path`` for a command; on failure remove what was created in it.

    Args:
        path: the directory the command writes.
        keep_if: called with ``path`` on failure; ``True`` keeps everything (the run
            can be resumed).

    Yields:
        ``path``, existing.

    Raises:
        ConfigError: when ``path`` exists and is not a directory.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory")
    top = _missing_top(path)
    before = set(path.iterdir()) if top is None and path.is_dir() else set()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if keep_if is None or not keep_if(path):
            if top is not None:
                _remove(top)
            else:
                for entry in set(path.iterdir()) - before:
                    _remove(entry)
        raise
