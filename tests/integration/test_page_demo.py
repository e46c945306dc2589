"""The demo page in headless Chromium (Debian's, driven by Playwright) on the real loop: a new
user's clicks change their embedding on the serving PS, and the page notices and shows a new
feed, round after round (that the liked genre then rises is test_loop's claim, over the API
with the whole catalogue; here the share is printed); the panels show the loop's figures; a stopped component's panel says it is down; titles
holding markup render as text. The screenshot is kept in build/test-artifacts/."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from flywheel.config import REPO_ROOT
from flywheel.stack import control
from datasets.movielens_sample import write_movielens
from tests.integration.loop_stack import running_loop

pytestmark = pytest.mark.integration
ROUNDS = 4  # like -> the row changes on serving -> the page shows a new feed, this many times
K = 30  # the page's feed (?k=): half the synthetic catalogue
CHROMIUM = "/usr/bin/chromium"  # Debian's package (make setup); Playwright downloads no browser
ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def loop(stack, tmp_path_factory):
    folder = write_movielens(tmp_path_factory.mktemp("ml"), users=120, items=60, ratings_per_user=25, days=4)
    item = folder / "u.item"  # every title holds markup: the page must show it as text
    item.write_text(re.sub(r"\|(Movie \d+) \(1997\)\|", r"|<i>\1</i> (1997)|", item.read_text()))
    with running_loop(stack, folder) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def feed_items(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#feed li", "els => els.map(e => ({id: e.dataset.itemId, genres: e.dataset.genres.split('|')}))")


def share(items: list[dict], genre: str) -> float:
    return sum(genre in item["genres"] for item in items) / len(items)


def panel(page, name: str) -> dict:
    return page.eval_on_selector(f'[data-panel="{name}"]', """el => ({up: el.dataset.up, text: el.textContent,
        figures: Object.fromEntries([...el.querySelectorAll("tr")].map(r => [r.dataset.figure, r.dataset.value]))})""")


def act_on_feed(page, genre: str) -> None:
    """Like and finish each shown item of ``genre``, skip the others. The page holds a new feed
    back while the person clicks; if a slow machine still paused long enough for it, the
    round ends there."""
    for item in feed_items(page):
        for action in ("like", "finish") if genre in item["genres"] else ("skip",):
            try:
                page.click(f'#feed li[data-item-id="{item["id"]}"] button[data-action="{action}"]', timeout=3_000)
            except PlaywrightTimeout:
                return


def test_a_new_users_clicks_change_their_embedding_and_the_page_shows_the_new_feed(loop, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{loop['url']}/demo?k={K}")
    page.click("#new-user")
    page.wait_for_selector("#feed li", timeout=30_000)

    # markup in a title is text: no element made of it, the tags visible as characters
    first_title = page.text_content("#feed li .title")
    assert first_title.startswith("<i>Movie ") and page.locator("#feed i").count() == 0

    first = feed_items(page)
    assert len(first) == K
    present = {g for item in first for g in item["genres"] if g}
    genre = min(present, key=lambda g: (share(first, g), g))  # the most room to rise
    before, shares, changes = share(first, genre), [], 0
    for _ in range(ROUNDS):
        changed_at = page.get_attribute("#embedding", "data-changed-at")
        request = page.get_attribute("#feed", "data-request-id")
        act_on_feed(page, genre)
        try:  # the user's row changes on the serving PS; the page then shows a new feed
            page.wait_for_function("was => (document.querySelector('#embedding').dataset.changedAt || null) !== was",
                                   arg=changed_at or None, timeout=30_000)
            page.wait_for_function("was => document.querySelector('#feed').dataset.requestId !== was",
                                   arg=request, timeout=30_000)
            changes += 1
        except Exception:  # noqa: BLE001 - no sync this round: counted below
            continue
        shares.append(share(feed_items(page), genre))
    print(f"genre {genre}: share of {K} {before:.2f} -> {[round(s, 2) for s in shares]}; row changed {changes} times")
    # every round closed the loop on the page (a round without a change is a sync that never came)
    assert changes >= ROUNDS - 1, f"the page saw the user's row change in {changes} of {ROUNDS} rounds"
    # the page says when it saw the row change (and how long after the last click, when the
    # change came after it: a change from the round before may land during this round's clicks)
    assert "last changed at" in page.text_content("#embedding")

    # the panels show the loop working (the joiner's Flink metrics refresh about every 10 s)
    page.wait_for_function("""() => {
        const v = (p, f) => Number(document.querySelector(`[data-panel="${p}"] tr[data-figure="${f}"]`)?.dataset.value || 0);
        return v("collector", "events_accepted") > 0 && v("trainer", "examples") > 0 && v("sync", "serving_rows") > 0
            && v("joiner", "positives") > 0; }""", timeout=60_000)
    assert panel(page, "champion")["up"] == "1" and panel(page, "champion")["figures"]["version"]
    assert panel(page, "freshness")["up"] == "0" and "Simulator" in panel(page, "freshness")["text"]  # not running
    arms = panel(page, "arms")  # the A/B panel: the tests' one arm, its click rate from the joined examples
    assert arms["up"] == "1" and arms["figures"]["champion_users_share"] == "1", arms
    assert float(arms["figures"]["champion_impressions"]) > 0 and "%" in arms["figures"]["champion_click_rate"], arms
    page.screenshot(path=ARTIFACTS / "demo-page.png", full_page=True)

    control.stop(loop["cfg"], ["online-trainer"])  # a component stops: its panel says so, by name
    started = time.monotonic()
    page.wait_for_function("document.querySelector('[data-panel=\"trainer\"]').dataset.up === '0'", timeout=20_000)
    assert "Online trainer is down" in panel(page, "trainer")["text"]
    assert panel(page, "collector")["up"] == "1"  # the rest of the page keeps going
    print(f"trainer panel down {time.monotonic() - started:.1f}s after the stop")
    page.screenshot(path=ARTIFACTS / "demo-page-trainer-down.png", full_page=True)
    assert not errors, errors
    page.close()
