"""Shared pytest configuration: one torch thread per process on this 2-core machine.

The tests mirror the packages (``tests/privacy/dp/`` for ``privacy/dp/``, ...). Pytest
imports them in its default ``prepend`` mode with no ``__init__.py`` files: each test
folder goes on ``sys.path`` (so helpers such as ``serve_process`` import by name), which
means every test file's basename must be unique across ``tests/``; pytest stops with
"import file mismatch" when two are not.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
