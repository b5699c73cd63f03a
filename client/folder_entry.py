"""One named file or folder of a folder type, declared in one line.

:class:`~fedpers.client.devices_folder.DevicesFolder` and
:class:`~fedpers.server.run_dir.RunDirectory` list their files as a table of
:class:`FolderEntry` attributes instead of one property each::

    class RunDirectory:
        root: Path
        config = FolderEntry("config.json", "the federation configuration")

    RunDirectory(Path("runs/r1")).config  # Path("runs/r1/config.json")

Only names: nothing is read or created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, overload

__all__ = ["FolderEntry", "HasRoot"]


class HasRoot(Protocol):
    """A folder type: its entries are paths below ``root``."""

    @property
    def root(self) -> Path:
        """The folder."""


class FolderEntry:
    """``folder.<attribute>`` is ``folder.root / name`` (a read-only, documented attribute).

    Args:
        name: the file or folder name below the root (``"config.json"``, ``"models"``).
        what: what it holds, for the attribute's documentation.
    """

    def __init__(self, name: str, what: str) -> None:
        """Name the entry and say what it holds."""
        self.name = name
        self.__doc__ = f"``{name}``: {what}."

    @overload
    def __get__(self, folder: None, owner: type) -> FolderEntry: ...

    @overload
    def __get__(self, folder: HasRoot, owner: type) -> Path: ...

    def __get__(self, folder: HasRoot | None, owner: type) -> Path | FolderEntry:
        """The entry's path in ``folder`` (the entry itself on the class)."""
        return self if folder is None else folder.root / self.name
