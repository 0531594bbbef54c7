"""The page's timeline chart and change mode in a real headless chromium, against a real `msearch serve` over the
Major TOM series with its planted change (tests/search/conftest.py `change_series`)."""

import pytest

from msearch.search.searcher import Searcher
from tests.places_series import CHANGED_CHIP
from tests.search.live_server import live_server
from tests.search.test_server_page import _wait, browser  # noqa: F401  (browser: a fixture)


@pytest.fixture(scope="module")
def series_server(change_series, tmp_path_factory):
    with live_server(change_series.index, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        yield base


def _points(driver) -> list[int]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#timeline svg circle.point')].map(c => Number(c.dataset.tileId))"
    )


def test_timeline_chart_of_a_result_and_change_mode(series_server, browser, change_series):  # noqa: F811
    searcher = Searcher(change_series.index)
    browser.get(series_server + "/?q=a+river+between+fields&top_k=4")
    _wait(browser, lambda d: len(d.find_elements("css selector", ".result")) == 4, "4 results")

    # Selecting a result draws its place's timeline for the query: one point per acquisition, in date order.
    card = browser.find_element("css selector", ".result:nth-child(2)")
    tile_id = int(card.get_attribute("data-tile-id"))
    place = searcher.store.place_of_tile(tile_id)
    acquisitions = [row["id"] for row in searcher.store.place_acquisitions(place)]
    card.click()
    _wait(browser, lambda d: _points(d) == acquisitions, f"the timeline of place {place} ({len(acquisitions)} points)")
    assert browser.find_element("id", "timeline").get_attribute("data-place-id") == str(place)
    assert len(browser.find_elements("css selector", "#timeline svg polyline.line")) == 1
    assert tile_id in _points(browser)
    # A point shows that acquisition's quicklook.
    browser.find_element("css selector", f"#timeline circle.point[data-tile-id='{acquisitions[0]}']").click()
    _wait(
        browser,
        lambda d: d.execute_script("const i = document.querySelector('.timeline-look img'); return !!i && i.complete"),
        "the acquisition's quicklook",
    )

    # Change mode: any change after 2020-05-01 ranks the planted change first, listed and drawn on the map.
    browser.find_element("id", "change-mode").click()
    assert browser.find_element("id", "change").is_displayed()
    browser.execute_script("document.getElementById('change-after').value = '2020-05-01'")
    browser.find_element("id", "change-any").click()
    browser.find_element("id", "change-go").click()
    _wait(browser, lambda d: len(d.find_elements("css selector", ".change-result")) == 9, "9 places ranked by change")
    first = browser.find_element("css selector", ".change-result").get_attribute("data-place-id")
    assert int(first) == change_series.place_of(searcher, CHANGED_CHIP)
    assert len(browser.find_elements("css selector", "#map path.footprint")) == 9
    assert "1 left out" in browser.find_element("id", "status").text
    reading = browser.find_element("id", "detected").text  # no text to read for --any: the space scored
    assert reading.startswith("→ ") and reading.removeprefix("→ ") in searcher.spaces()
    _wait(
        browser,
        lambda d: (
            d.execute_script(
                "return [...document.querySelectorAll('.change-result:first-child img.quicklook')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length"
            )
            == 2
        ),
        "the first place's before and after quicklooks",
    )
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith(series_server) or name.startswith("blob:") for name in resources), resources
