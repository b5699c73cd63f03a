"""Screenshots of the storefront and the privacy center for docs/img (desktop and phone).

Serves a run with ``fedpers serve --demo`` (its API database in a temporary folder, so
the run is left as it was), opens the pages in headless Debian Chromium, grants
personalisation, opens three titles of one genre and saves::

    OUT/storefront-desktop.png      1280 x 800
    OUT/storefront-phone.png        390 x 844
    OUT/privacy-center-desktop.png  1280 wide, the whole page
    OUT/privacy-center-phone.png    390 x 844

Without ``--run`` it first trains the README's run (ML-100K, user-level DP, epsilon 8)
with ``fedpers simulate`` into a temporary folder (about two minutes on two cores).

Usage:
    .venv/bin/python scripts/web_screenshots.py --run runs/ml100k-eps8-... --out docs/img
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from serve_process import FEDPERS
from web_harness import DESKTOP, PHONE, launch_chromium, serve_demo, wait_until

_MODEL_LOADED = (
    "() => !document.getElementById('model-guarantee').textContent.startsWith('Loading')"
)


def _simulate(out: Path) -> Path:
    run = out / "ml100k-eps8"
    command = [str(FEDPERS), "simulate", "--dataset", "ml-100k", "--dp", "user"]
    subprocess.run([*command, "--epsilon", "8", "--out", str(run)], check=True)
    return run


def _storefront(page: Any, base: str, genre: str) -> None:
    page.goto(f"{base}/")
    wait_until(page, "() => Number(document.body.dataset.recSeq || 0) > 0")
    prompt = page.locator("#grant-personalisation")
    if prompt.is_visible():
        prompt.click()
    page.select_option("#genre", genre)
    wait_until(
        page, "g => document.getElementById('catalogue-count').textContent.includes(g)", genre
    )
    for button in page.locator("#catalogue button.open").all()[:3]:
        seq = page.evaluate("Number(document.body.dataset.recSeq)")
        button.click()
        wait_until(page, "n => Number(document.body.dataset.recSeq) > n", seq)
    page.locator("#rec-row details.why").first.evaluate("d => d.open = true")
    page.evaluate("window.scrollTo(0, 0)")


def capture(base: str, out: Path, genre: str) -> list[Path]:
    """Save the four screenshots of ``base`` into ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                context = browser.new_context(viewport=viewport)
                page = context.new_page()
                _storefront(page, base, genre)
                shots.append(out / f"storefront-{name}.png")
                page.screenshot(path=str(shots[-1]))
                page.get_by_role("link", name="Privacy center", exact=True).click()
                page.wait_for_selector("body[data-ready='true']")
                wait_until(page, _MODEL_LOADED)
                shots.append(out / f"privacy-center-{name}.png")
                page.screenshot(path=str(shots[-1]), full_page=name == "desktop")
                context.close()
        finally:
            browser.close()
    return shots


def main() -> None:
    """Parse the options, serve the run, save the screenshots."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="run directory to serve (default: simulate one)")
    parser.add_argument("--out", type=Path, default=Path("docs/img"), help="folder for the PNGs")
    parser.add_argument("--genre", default="Sci-Fi", help="genre of the three titles opened")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedpers-shots-") as tmp:
        run = args.run if args.run is not None else _simulate(Path(tmp))
        with serve_demo(run, Path(tmp) / "serve.log", db=Path(tmp) / "api.db") as base:
            shots = capture(base, args.out, args.genre)
    if args.json:
        print(json.dumps({"screenshots": [str(p) for p in shots]}))
    else:
        for path in shots:
            print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
