"""The storefront and the privacy center in a real browser, against a real ``fedpers serve``.

Headless Debian Chromium (``/usr/bin/chromium``, never a browser download) driven by
playwright, a ``fedpers serve --demo`` process on a free 127.0.0.1 port, and a small run:
48 titles in four genres taken in turn (item ``i`` has genre ``i mod 4``), each genre one
axis of the item vectors, popularity falling with the id. A visitor who opens three Sci-Fi
titles should get a Sci-Fi row; one who withdrew P6 or whose browser sends GPC should
not, whatever the page sends. The recommendation requests are recorded: before consent,
without P6 and under GPC the page sends no personal state at all. Screenshots go to
``tests/artifacts/web/``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from web_harness import (
    DESKTOP,
    PHONE,
    build_run,
    chromium_missing,
    launch_chromium,
    serve_demo,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        chromium_missing() and not os.environ.get("CI"),
        reason="Debian chromium is not installed (.ci/run installs it; under CI this never skips)",
    ),
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "web"
GENRES = ["Comedy", "Drama", "Sci-Fi", "Romance"]
N_ITEMS = 48
SCI_FI = [str(i + 1) for i in range(N_ITEMS) if GENRES[i % 4] == "Sci-Fi"]


def _genre(item: str) -> str:
    return GENRES[(int(item) - 1) % 4]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("web")
    vectors = np.zeros((N_ITEMS, 4), dtype=np.float32)
    vectors[np.arange(N_ITEMS), np.arange(N_ITEMS) % 4] = 1.0
    run_dir = build_run(
        root / "run",
        titles=[f"{GENRES[i % 4]} title {i + 1}" for i in range(N_ITEMS)],
        genres=[[GENRES[i % 4]] for i in range(N_ITEMS)],
        item_vectors=vectors,
        item_bias=np.linspace(0.3, 0.0, N_ITEMS),
        privacy={
            "unit": "user",
            "epsilon": 8.0,
            "delta": 1e-5,
            "accountant": "rdp",
            "mechanism": "gaussian",
            "label": "user-level DP (DP-FedAvg)",
        },
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_demo(run_dir, ARTIFACTS / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


def _row(page: Any) -> list[str]:
    items: list[str] = page.eval_on_selector_all(
        "#rec-row > li", "els => els.map(e => e.dataset.item)"
    )
    return items


def _wait_recs(page: Any, after: int) -> None:
    """Wait until the page has rendered a recommendation answer newer than ``after``."""
    wait_until(
        page,
        "n => Number(document.body.dataset.recSeq || 0) > n && "
        "!document.querySelector('#rec-row').hasAttribute('aria-busy')",
        after,
    )


def _seq(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.recSeq || 0)"))


def _open_titles(page: Any, items: list[str]) -> None:
    for item in items:
        before = _seq(page)
        page.click(f'#catalogue button[data-item="{item}"]')
        _wait_recs(page, before)


def _forced_request(page: Any, events: list[str]) -> dict[str, Any]:
    """Ask for recommendations with personal state, whatever the page would send."""
    body = {
        "user_id": page.evaluate("localStorage.getItem('fedpers.visitor')"),
        "k": 6,
        "personal_state": {"events": [{"item": i, "kind": "click"} for i in events]},
    }
    script = """async body => {
        const config = await (await fetch('/demo/config.json')).json();
        const r = await fetch('/v1/recommendations', {method: 'POST', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json',
                      'Authorization': 'Bearer ' + config.api_key}});
        return await r.json();
    }"""
    answer: dict[str, Any] = page.evaluate(script, body)
    return answer


def _set_purpose(page: Any, purpose: int, on: bool) -> None:
    switch = page.locator(f"#purpose-{purpose}")
    assert switch.is_checked() is not on
    before = page.evaluate("Number(document.body.dataset.historyCount)")
    switch.focus()
    page.keyboard.press("Space")  # the switches work from the keyboard
    wait_until(
        page,
        "n => Number(document.body.dataset.historyCount) > n && !document.querySelector("
        f"'#purpose-{purpose}').disabled",
        before,
    )
    assert switch.is_checked() is on


def _record_requests(page: Any, into: list[dict[str, Any]]) -> None:
    """Keep the body of every recommendation request the page (or the test) sends."""

    def keep(request: Any) -> None:
        if request.method == "POST" and request.url.endswith("/v1/recommendations"):
            into.append(json.loads(request.post_data))

    page.on("request", keep)


def _session_storage(page: Any) -> str | None:
    stored: str | None = page.evaluate("sessionStorage.getItem('fedpers.session')")
    return stored


def test_storefront_and_privacy_center_end_to_end(base_url: str, browser: Any) -> None:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    sent: list[dict[str, Any]] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _record_requests(page, sent)
    page.goto(f"{base_url}/")
    _wait_recs(page, 0)
    banner = page.locator("#rec-banner")
    assert banner.get_attribute("data-personalised") == "false"
    popular = _row(page)
    assert len(popular) == 6
    assert page.locator("#catalogue > li").count() == 24
    first = page.locator("#catalogue > li").first
    assert first.locator("h3").inner_text() == "Comedy title 1"
    assert first.locator(".genres").inner_text() == "Comedy"
    page.screenshot(path=str(ARTIFACTS / "01-storefront-first-visit.png"))

    # before any consent, an opened title stays in the page's memory: not sent, not stored
    _open_titles(page, SCI_FI[:1])
    assert sent and all("personal_state" not in body for body in sent)
    assert _session_storage(page) is None
    assert banner.get_attribute("data-personalised") == "false"

    # grant personalisation from the consent prompt, open three more Sci-Fi titles
    before = _seq(page)
    page.get_by_role("button", name="Personalise my recommendations").click()
    _wait_recs(page, before)
    assert page.locator("#consent-prompt").is_hidden()
    opened = SCI_FI[3:6]
    _open_titles(page, opened)
    events = [e["item"] for e in sent[-1]["personal_state"]["events"]]
    assert events == SCI_FI[:1] + opened
    assert _session_storage(page) is not None  # P1 granted: the tab keeps its session
    personal = _row(page)
    assert banner.get_attribute("data-personalised") == "true", banner.inner_text()
    assert "Personalised for you" in banner.inner_text()
    assert personal != popular
    assert not set(opened) & set(personal), "titles already opened are not recommended"
    assert [_genre(i) for i in personal].count("Sci-Fi") >= 5, personal
    page.locator("#rec-row details.why summary").first.click()
    why = page.locator("#rec-row details.why p").first
    assert why.is_visible()
    assert why.inner_text().startswith("because you interacted with Sci-Fi title"), why.inner_text()
    page.screenshot(path=str(ARTIFACTS / "02-storefront-personalised.png"), full_page=True)

    # withdraw P6 in the privacy center: the row is no longer personalised and says why
    page.get_by_role("link", name="Privacy center", exact=True).click()
    page.wait_for_selector("body[data-ready='true']")
    for purpose in (1, 5, 6):
        assert page.locator(f"#purpose-{purpose}").is_checked()
    _set_purpose(page, 6, on=False)
    page.screenshot(path=str(ARTIFACTS / "03-privacy-p6-withdrawn.png"), full_page=True)
    sent.clear()
    page.get_by_role("link", name="Storefront", exact=True).click()
    _wait_recs(page, 0)
    assert sent and all("personal_state" not in body for body in sent)  # nothing sent
    text = banner.inner_text()
    assert banner.get_attribute("data-personalised") == "false"
    assert "Not personalised" in text and "P6 not granted" in text, text
    assert [_genre(i) for i in _row(page)].count("Sci-Fi") < 5
    # the server refuses too, whatever a page sends
    forced = _forced_request(page, opened)
    assert forced["personalised"] is False and "P6 not granted" in forced["reason"]
    page.screenshot(path=str(ARTIFACTS / "04-storefront-p6-withdrawn.png"))

    # grant P6 again: personalised again with the session the tab kept
    page.get_by_role("link", name="Privacy center", exact=True).click()
    page.wait_for_selector("body[data-ready='true']")
    _set_purpose(page, 6, on=True)
    page.get_by_role("link", name="Storefront", exact=True).click()
    _wait_recs(page, 0)
    assert banner.get_attribute("data-personalised") == "true", banner.inner_text()
    storage = context.storage_state()

    # the same visitor, now with a browser that sends Global Privacy Control
    gpc_context = browser.new_context(
        viewport=PHONE, storage_state=storage, extra_http_headers={"Sec-GPC": "1"}
    )
    gpc_page = gpc_context.new_page()
    gpc_sent: list[dict[str, Any]] = []
    gpc_page.on("pageerror", lambda exc: errors.append(str(exc)))
    _record_requests(gpc_page, gpc_sent)
    gpc_page.goto(f"{base_url}/")
    _wait_recs(gpc_page, 0)
    _open_titles(gpc_page, SCI_FI[:3])
    assert len(gpc_sent) == 4 and all("personal_state" not in body for body in gpc_sent)
    gpc_banner = gpc_page.locator("#rec-banner")
    gpc_text = gpc_banner.inner_text()
    assert gpc_banner.get_attribute("data-personalised") == "false"
    assert "Sec-GPC" in gpc_text and "Global Privacy Control" in gpc_text, gpc_text
    forced = _forced_request(gpc_page, SCI_FI[:3])
    assert forced["personalised"] is False and "Sec-GPC" in forced["reason"]
    gpc_page.screenshot(path=str(ARTIFACTS / "05-storefront-gpc-phone.png"), full_page=True)
    gpc_page.goto(f"{base_url}/privacy")
    gpc_page.wait_for_selector("body[data-ready='true']")
    assert gpc_page.evaluate("document.body.dataset.gpc") == "true"
    assert "sent Global Privacy Control" in gpc_page.locator("#gpc-state").inner_text()
    gpc_page.screenshot(path=str(ARTIFACTS / "06-privacy-gpc-phone.png"), full_page=True)
    gpc_context.close()

    # delete my data (with confirmation): history gone, a new visitor id, the old one erased
    page.get_by_role("link", name="Privacy center", exact=True).click()
    page.wait_for_selector("body[data-ready='true']")
    assert page.evaluate("document.body.dataset.gpc") == "false"  # GPC was that browser's
    # withdrawing P1 empties what the tab kept
    assert _session_storage(page) is not None
    _set_purpose(page, 1, on=False)
    assert _session_storage(page) is None
    old_id = page.locator("#visitor-id").inner_text()
    assert int(page.evaluate("document.body.dataset.historyCount")) >= 4  # P1/5/6, -P6, +P6, -P1
    guarantee = page.locator("#model-guarantee").inner_text()
    assert "everything one person contributed" in guarantee
    assert "ε = 8" in guarantee and "δ = 1.0e-5" in guarantee and "2,981" in guarantee
    page.get_by_role("link", name="Download the audit report of this model").click()
    wait_until(page, "() => document.getElementById('report-status').textContent.length > 0")
    assert "fedpers audit" in page.locator("#report-status").inner_text()  # no report yet
    with page.expect_download() as download:
        page.get_by_role("button", name="Download my data").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["user_id"] == old_id
    assert [e["action"] for e in exported["consent_history"]][:3] == [
        "grant",
        "withdraw",
        "grant",
    ]
    page.get_by_role("button", name="Delete my data").click()
    dialog = page.locator("#confirm-delete")
    assert dialog.is_visible()
    page.get_by_role("button", name="Keep my data").click()  # cancelling keeps everything
    assert dialog.is_hidden()
    assert page.locator("#visitor-id").inner_text() == old_id
    page.get_by_role("button", name="Delete my data").click()
    page.get_by_role("button", name="Delete everything").click()
    wait_until(page, "old => document.getElementById('visitor-id').textContent !== old", old_id)
    page.wait_for_selector("#history-empty:not([hidden])")
    assert page.evaluate("document.body.dataset.historyCount") == "0"
    assert page.locator("#history-wrap").is_hidden()
    new_id = page.locator("#visitor-id").inner_text()
    assert new_id.startswith("web-") and new_id != old_id
    page.screenshot(path=str(ARTIFACTS / "07-privacy-deleted.png"), full_page=True)
    key = json.loads(urllib.request.urlopen(f"{base_url}/demo/config.json").read())["api_key"]
    request = urllib.request.Request(
        f"{base_url}/v1/users/{old_id}/consent", headers={"Authorization": f"Bearer {key}"}
    )
    view = json.loads(urllib.request.urlopen(request).read())
    assert view["erased"] is True and view["granted"] == []
    assert errors == []
    context.close()


# WCAG 2.x contrast of every visible text node against its nearest opaque background
# (4.5:1, or 3:1 for large text: 24 px, or 18.66 px bold).
_CONTRAST = """() => {
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (color) => color.match(/[\\d.]+/g).map(Number);
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c.length < 4 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const node = t.parentElement;
    if (!t.textContent.trim() || !node.checkVisibility()) continue;
    const style = getComputedStyle(node);
    const fg = lum(parse(style.color).slice(0, 3));
    const bg = lum(background(node));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) failures.push(`${ratio.toFixed(2)} ${t.textContent.trim()}`);
  }
  return failures;
}"""


@pytest.mark.parametrize(("name", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_pages_fit_the_screen_and_work_from_the_keyboard(
    base_url: str, browser: Any, name: str, viewport: dict[str, int]
) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    for path in ("/", "/privacy"):
        page.goto(f"{base_url}{path}")
        page.wait_for_selector("#rec-row > li" if path == "/" else "body[data-ready='true']")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{path} scrolls sideways at {name} width ({width} px)"
        # every control has an accessible name
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, input, a[href]')]
                .filter(e => !(e.getAttribute('aria-label') || e.labels?.length
                              || e.textContent.trim()))
                .map(e => e.outerHTML)"""
        )
        assert unnamed == []
        assert page.evaluate(_CONTRAST) == [], f"text below WCAG AA contrast on {path}"
        # Tab reaches the skip link first, then the page's own controls
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        page.screenshot(path=str(ARTIFACTS / f"{path.strip('/') or 'storefront'}-{name}.png"))
    # the storefront's Open buttons are reachable with the keyboard and act on Enter
    page.goto(f"{base_url}/")
    _wait_recs(page, 0)
    before = _seq(page)
    button = page.locator("#catalogue button.open").first
    button.focus()
    page.keyboard.press("Enter")
    _wait_recs(page, before)
    assert page.locator("#session-list > li").count() == 1
    context.close()


def test_without_demo_the_pages_say_how_to_enable_it(browser: Any, base_url: str) -> None:
    # the served pages ask /demo/config.json; a server without --demo answers demo: false
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.route(
        "**/demo/config.json",
        lambda route: route.fulfill(
            json={"demo": False, "enable_hint": "fedpers serve --run RUN_DIR --demo"}
        ),
    )
    page.goto(f"{base_url}/privacy")
    notice = page.locator("#demo-off")
    notice.wait_for(state="visible")
    assert "fedpers serve --run RUN_DIR --demo" in notice.inner_text()
    context.close()
