"""Every ``>>>`` example in the package's docstrings runs and is true.

``pytest --doctest-modules`` cannot be used: the source folders are mapped to ``fedpers.*``
by ``[tool.setuptools] package-dir``, so pytest would import them under their folder names
(and, e.g., register the Prometheus metrics of ``server/api/observability.py`` twice).
This file imports every module by its package name instead and runs its examples with
:mod:`doctest` (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` on), one test per module that
has examples. Each module runs in a fresh temporary working directory, so an example
that writes a relative path leaves nothing behind; better still, examples create what
they need in a ``tempfile.TemporaryDirectory()`` and clean it up.

An example that needs the network, a running server or long work carries
``# doctest: +SKIP`` on its ``>>>`` line; a module where every example is skipped checks
nothing and fails.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

PACKAGES = ("fedpers.privacy", "fedpers.client", "fedpers.server", "fedpers.simulation")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def module_names() -> list[str]:
    """Every module of the four packages, by its package name."""
    names: list[str] = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, f"{package}.")]
    return sorted(names)


def find_examples(name: str) -> list[doctest.DocTest]:
    """The module's docstrings that hold examples, each with a fresh copy of its globals.

    Raises:
        ValueError: an example is malformed (e.g. an option directive on a comment line).
    """
    module = importlib.import_module(name)
    found = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    return sorted((t for t in found if t.examples), key=lambda t: t.name)


def has_examples(name: str) -> bool:
    try:
        return bool(find_examples(name))
    except (ValueError, ImportError):  # collected, so that the test reports the error
        return True


WITH_EXAMPLES = [name for name in module_names() if has_examples(name)]


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in find_examples(name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name}: every example is marked +SKIP; make one run"
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed in {name}:\n" + "".join(report)
    )
