"""The docs stay honest: the CLI reference is generated from the code and every command has help."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer

from fedpers.simulation.cli.app import app
from fedpers.simulation.cli.reference import command_paths, render_reference

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_matches_the_code() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == render_reference(), (
        "docs/cli.md is stale: python -m fedpers.simulation.cli.reference > docs/cli.md"
    )


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)

    def walk(cmd: click.Command, path: str) -> None:
        assert (cmd.help or "").strip(), f"{path} has no help text"
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(root, "fedpers")


def test_the_architecture_commands_exist() -> None:
    top = {p.split()[1] for p in command_paths() if len(p.split()) > 1}
    assert {"data", "bench", "client", "keys"} <= top


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_section = readme.split("\n## ", 2)[1]
    assert "make run" in first_section and "make test" in first_section


# -- every snippet runs ----------------------------------------------------------------
#
# Fences say what a block is. ```python blocks are executed and ```sh (or bash, shell)
# blocks run with bash -e, in order, in one fresh folder per page (so a page reads as one
# session), with .venv/bin on PATH. Every other fence (console, text, toml, json,
# mermaid, none) is shown only: use ```console for commands that need the network or
# minutes of CPU. Directly above a fence, `<!-- no-test: why -->` skips a python or sh
# block and `<!-- docs-test: setup=tiny-run DIR -->` first publishes a small global model
# (1,682 items, as ML-100K) in run directory DIR, for blocks that need a trained run.

RUN_FENCES = {"python": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(no-test|docs-test:)\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Snippet:
    """One fenced block of a Markdown page."""

    path: Path
    line: int
    fence: str
    text: str
    directive: str = ""

    @property
    def runs(self) -> bool:
        return self.fence in RUN_FENCES and not self.directive.startswith("no-test")

    @property
    def setup(self) -> list[str]:
        words = self.directive.removeprefix("docs-test:").split()
        return (
            [w.removeprefix("setup=") for w in words]
            if self.directive.startswith("docs-test:")
            else []
        )


def snippets(path: Path) -> list[Snippet]:
    """The fenced blocks of ``path`` with the directive comment just above each."""
    out: list[Snippet] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        above = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        directive = _DIRECTIVE.match(above)
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        assert end < len(lines), f"{path}:{i + 1}: unclosed code fence"
        text = "\n".join(lines[i + 1 : end]) + "\n"
        word = "" if directive is None else f"{directive.group(1)} {directive.group(2)}".strip()
        out.append(Snippet(path, i + 1, match.group(1).lower(), text, word))
        i = end + 1
    return out


def publish_tiny_run(run_dir: Path, n_items: int = 1682, dim: int = 8) -> Path:
    """A run directory holding one published global model (seeded random item side)."""
    import numpy as np

    from fedpers.client.global_model import GlobalModel
    from fedpers.client.model import ModelConfig

    rng = np.random.default_rng(0)
    model = GlobalModel.from_arrays(
        ModelConfig(n_items=n_items, dim=dim),
        [
            rng.normal(0, 0.1, (n_items, dim)).astype(np.float32),
            rng.normal(0, 0.1, n_items).astype(np.float32),
        ],
        [str(i) for i in range(n_items)],
        meta={"round": 1},
    )
    return model.save(run_dir / "models" / "round-0001.npz")


def run_snippet(snippet: Snippet, cwd: Path) -> None:
    """Run one block in ``cwd``; fail naming the page and line."""
    for i in range(0, len(snippet.setup), 2):
        kind, where = snippet.setup[i], snippet.setup[i + 1]
        assert kind == "tiny-run", f"{snippet.path}:{snippet.line}: unknown setup {kind!r}"
        publish_tiny_run(cwd / where)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    if RUN_FENCES[snippet.fence] == "python":
        cmd = [sys.executable, "-c", snippet.text]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", snippet.text]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{snippet.path.relative_to(ROOT) if snippet.path.is_relative_to(ROOT) else snippet.path}"
        f":{snippet.line}: the {snippet.fence} block failed (exit {proc.returncode})\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_snippet_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    for snippet in snippets(page):
        if snippet.runs:
            run_snippet(snippet, tmp_path)


def test_the_quickstart_runs_its_device_session() -> None:
    """The pages a new user starts from have runnable blocks, not only illustrations."""
    quickstart = snippets(ROOT / "docs" / "quickstart.md")
    run = [s for s in quickstart if s.runs]
    assert {s.fence for s in run} == {"sh", "python"}
    assert any("EventStore.create" in s.text for s in run)
    assert any("fedpers client ingest" in s.text and "event_type" in s.text for s in run)


def test_a_failing_snippet_fails_and_markers_skip(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\ntrue\n```\n\n<!-- no-test: needs a GPU -->\n```sh\nexit 3\n```\n\n"
        "```console\nexit 4\n```\n\n```\nexit 5\n```\n\n```python\nraise SystemExit(6)\n```\n"
    )
    found = snippets(page)
    assert [(s.fence, s.runs) for s in found] == [
        ("sh", True),
        ("sh", False),
        ("console", False),
        ("", False),
        ("python", True),
    ]
    run_snippet(found[0], tmp_path)
    with pytest.raises(AssertionError, match=r"page.md:18: the python block failed \(exit 6\)"):
        run_snippet(found[4], tmp_path)
