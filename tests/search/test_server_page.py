"""The page of `msearch serve` in a real headless browser (Debian's chromium and chromium-driver, driven by
Selenium), against a real `msearch serve` process on a free loopback port that the test starts and stops: over
EuroSAT tiles, and over a Major TOM cell indexed at six dates (tests/places_series.py), whose places the page
shows as one card each with a strip of its dates."""

import json
import os
import shutil
import urllib.request

import pytest

from msearch.search.searcher import Searcher
from tests.search.live_server import live_server

TOP_K = 6


@pytest.fixture(scope="module")
def server(eurosat_index, tmp_path_factory):
    with live_server(eurosat_index, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = "Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, seconds: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: condition(d))
    except Exception as exc:
        status = driver.find_element("id", "status").text
        raise AssertionError(f"the page never showed {what} (status line: {status!r})") from exc


def _result_ids(driver) -> list[int]:
    # In one script: the cards are replaced while a search lands, and element handles would go stale.
    return driver.execute_script("return [...document.querySelectorAll('.result')].map(c => Number(c.dataset.tileId))")


def _loaded_quicklooks(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('img.quicklook')].filter(i => i.complete && i.naturalWidth > 0).length"
    )


def test_search_see_results_and_refine_by_example(server, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    browser.get(server + "/")
    box = browser.find_element("id", "q")
    top_k = browser.find_element("id", "top_k")
    top_k.clear()
    top_k.send_keys(str(TOP_K))
    box.send_keys("a river between fields", Keys.ENTER)

    _wait(browser, lambda d: len(_result_ids(d)) == TOP_K, f"{TOP_K} results")
    _wait(browser, lambda d: _loaded_quicklooks(d) == TOP_K, f"{TOP_K} quicklook images")
    footprints = browser.find_elements("css selector", "#map path.footprint")
    assert len(footprints) == TOP_K
    assert "read as en" in browser.find_element("id", "detected").text
    first = _result_ids(browser)
    assert "q=a+river+between+fields" in browser.current_url and f"top_k={TOP_K}" in browser.current_url

    # A footprint on the map selects its card and shows the tile's details.
    browser.find_element("css selector", ".result:nth-child(2)").click()
    _wait(browser, lambda d: d.find_element("id", "detail").is_displayed(), "the tile's details")
    selected = browser.find_elements("css selector", ".result.selected")
    assert [int(card.get_attribute("data-tile-id")) for card in selected] == [first[1]]

    # 👍 on the first result: the search runs again with it as an example, and the results change.
    browser.find_element("css selector", ".result:first-child .votes button.like").click()
    _wait(browser, lambda d: f"like={first[0]}" in d.current_url, "the liked tile in the address")
    _wait(browser, lambda d: len(_result_ids(d)) == TOP_K and _result_ids(d) != first, "new results")
    refined = _result_ids(browser)
    assert first[0] not in refined
    assert browser.find_element("id", "liked").text.startswith(f"tile {first[0]}")
    _wait(browser, lambda d: _loaded_quicklooks(d) == TOP_K, "the new results' quicklooks")
    assert len(browser.find_elements("css selector", "#map path.footprint")) == TOP_K

    # Nothing came from anywhere but this server.
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(name.startswith(server) or name.startswith("blob:") for name in resources), resources

    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    if os.environ.get("MSEARCH_SCREENSHOT"):  # a copy to look at, where the developer asked for one
        shutil.copy(shot, os.environ["MSEARCH_SCREENSHOT"])

    # The address holds the whole state: opening it again gives the same refined results.
    browser.get(browser.current_url)
    _wait(browser, lambda d: _result_ids(d) == refined, "the same results from the address alone")


def test_an_address_opens_with_its_search(server, browser):
    browser.get(server + "/?q=forest&top_k=4")
    _wait(browser, lambda d: len(_result_ids(d)) == 4, "4 results")
    assert browser.find_element("id", "q").get_attribute("value") == "forest"
    browser.get(server + "/?q=forest&top_k=500")
    _wait(browser, lambda d: "top_k" in d.find_element("id", "status").text, "the server's message about top_k")


def test_heat_overlays_toggle_on_a_card_and_on_the_map(server, browser):
    browser.get(server + "/?q=a+river&top_k=4")
    _wait(browser, lambda d: len(_result_ids(d)) == 4, "4 results")
    _wait(browser, lambda d: _loaded_quicklooks(d) == 4, "4 quicklook images")

    def requested(d) -> list[str]:
        return d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")

    assert not [name for name in requested(browser) if "/heatmap." in name]  # nothing until asked for

    def card_heat(d) -> int:
        return d.execute_script(
            "return [...document.querySelectorAll('.result .thumb img.heat')]"
            ".filter(i => i.complete && i.naturalWidth === 64).length"
        )

    def map_heat(d) -> int:
        return len(d.find_elements("css selector", "#map img.heat-overlay"))

    first = _result_ids(browser)[0]
    browser.find_element("css selector", ".result:first-child button.heat").click()
    _wait(browser, lambda d: card_heat(d) == 1 and map_heat(d) == 1, "the first result's heat on its card and map")
    assert browser.find_elements("css selector", ".result:first-child .thumb img.heat")
    assert [n for n in requested(browser) if f"/api/tiles/{first}/heatmap.png?q=a+river" in n]
    browser.find_element("css selector", ".result:first-child button.heat").click()
    _wait(browser, lambda d: card_heat(d) == 0 and map_heat(d) == 0, "the heat gone again")

    browser.find_element("css selector", "#map button.heat-all").click()
    _wait(browser, lambda d: card_heat(d) == 4 and map_heat(d) == 4, "every result's heat")
    if os.environ.get("MSEARCH_HEAT_SCREENSHOT"):  # a picture of the overlays, where the developer asked for one
        browser.save_screenshot(os.environ["MSEARCH_HEAT_SCREENSHOT"])
    browser.find_element("css selector", "#map button.heat-all").click()
    _wait(browser, lambda d: map_heat(d) == 0, "every heat overlay gone")


def _overlays(driver) -> dict[int, dict]:
    """The quicklooks on the map, by tile id: where they are drawn (pixels in the map) and their state."""
    found = driver.execute_script(
        """
        const box = map.getContainer().getBoundingClientRect();
        const found = {};
        for (const img of document.querySelectorAll('.leaflet-imagery-pane img.imagery')) {
          const r = img.getBoundingClientRect();
          found[img.dataset.tileId] = {
            left: r.left - box.left, top: r.top - box.top, right: r.right - box.left, bottom: r.bottom - box.top,
            small: img.classList.contains('too-small'), hovered: img.classList.contains('hovered'),
            loaded: img.complete && img.naturalWidth > 0,
          };
        }
        return found;"""
    )
    return {int(tile_id): overlay for tile_id, overlay in found.items()}


def _footprint_on_screen(driver, footprint: dict) -> dict:
    """The footprint's WGS84 bounds, in pixels of the map as Leaflet projects them now."""
    lons, lats = zip(*footprint["coordinates"][0])
    return driver.execute_script(
        """
        const nw = map.latLngToContainerPoint([arguments[1], arguments[0]]);
        const se = map.latLngToContainerPoint([arguments[3], arguments[2]]);
        return {left: nw.x, top: nw.y, right: se.x, bottom: se.y};""",
        min(lons),
        max(lats),
        max(lons),
        min(lats),
    )


def test_each_result_quicklook_lies_on_the_map_at_its_footprint(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(server + f"/?q=a+river&top_k={TOP_K}")
    _wait(browser, lambda d: len(_result_ids(d)) == TOP_K, f"{TOP_K} results")
    ids = _result_ids(browser)
    # At the zoom that shows all of them (results across Europe) a picture would be a dot: footprints and
    # markers as before, and no quicklook asked for the map.
    _wait(browser, lambda d: len(d.find_elements("css selector", "#map path.centre")) == TOP_K, "the markers")
    assert len(browser.find_elements("css selector", "#map path.footprint")) == TOP_K
    assert _overlays(browser) == {}

    for rank, tile_id in enumerate(ids, start=1):
        with urllib.request.urlopen(f"{server}/api/tiles/{tile_id}") as response:
            footprint = json.load(response)["footprint"]
        # Its picture, not the card's middle: a place's card is taller (its dates), and its middle falls on
        # the card's buttons.
        browser.find_element("css selector", f".result:nth-child({rank}) .thumb").click()  # zooms to the tile

        def drawn_at_the_footprint(d, tile_id=tile_id, footprint=footprint):
            overlay = _overlays(d)[tile_id]
            expected = _footprint_on_screen(d, footprint)
            return not overlay["small"] and all(abs(overlay[side] - expected[side]) < 1.5 for side in expected)

        _wait(browser, lambda d, t=tile_id: t in _overlays(d), f"tile {tile_id}'s quicklook on the map")
        _wait(browser, drawn_at_the_footprint, f"tile {tile_id}'s quicklook over its footprint")
        overlay = _overlays(browser)[tile_id]
        assert overlay["loaded"] and overlay["right"] - overlay["left"] > 20 and overlay["bottom"] - overlay["top"] > 20
    assert sorted(_overlays(browser)) == sorted(ids)  # one picture per result, each where it belongs

    # Hovering a card highlights its picture; hovering the picture's place on the map highlights the card.
    ActionChains(browser).move_to_element(browser.find_element("css selector", ".result:nth-child(2)")).perform()
    _wait(browser, lambda d: [t for t, o in _overlays(d).items() if o["hovered"]] == [ids[1]], "the hovered picture")
    ActionChains(browser).move_to_element(browser.find_element("id", "map")).perform()  # the last tile, centred
    hovered = "return [...document.querySelectorAll('.result.hovered')].map(c => Number(c.dataset.tileId))"
    _wait(browser, lambda d: d.execute_script(hovered) == [ids[-1]], "the card of the picture under the mouse")
    assert [t for t, o in _overlays(browser).items() if o["hovered"]] == [ids[-1]]


# -- places ---------------------------------------------------------------------------------------------------

PLACES_TOP_K = 4


@pytest.fixture(scope="module")
def places_server(places_series_index, tmp_path_factory):
    with live_server(places_series_index, tmp_path_factory.mktemp("serve-places") / "serve.log") as base:
        yield base


def _cards(driver) -> list[dict]:
    return driver.execute_script(
        """return [...document.querySelectorAll('.result')].map(c => ({
            tile: Number(c.dataset.tileId), place: Number(c.dataset.placeId),
            dates: [...c.querySelectorAll('.dates .date')].map(b => [b.textContent, Number(b.dataset.tileId)]),
            shown: [...c.querySelectorAll('.thumb img')].map(i => Number(i.dataset.tileId || c.dataset.tileId)),
        }))"""
    )


def test_each_place_is_one_card_with_its_dates_and_a_date_shows_its_quicklook(
    places_server, browser, places_series_index
):
    expected = Searcher(places_series_index).query("a river", top_k=PLACES_TOP_K).results
    browser.get(places_server + f"/?q=a+river&top_k={PLACES_TOP_K}")
    _wait(browser, lambda d: len(_result_ids(d)) == PLACES_TOP_K, f"{PLACES_TOP_K} place cards")
    _wait(browser, lambda d: _loaded_quicklooks(d) == PLACES_TOP_K, f"{PLACES_TOP_K} quicklooks")
    cards = _cards(browser)
    assert [c["place"] for c in cards] == [r.place_id for r in expected]
    assert [c["tile"] for c in cards] == [r.tile_id for r in expected]
    assert browser.find_element("id", "status").text.startswith(f"{PLACES_TOP_K} places")
    for card, result in zip(cards, expected):
        # the strip: every date of the place, in date order, each naming its acquisition
        assert [text for text, _ in card["dates"]] == sorted(d[:10] for d in result.dates)
        assert sorted(tile for _, tile in card["dates"]) == sorted(result.date_tile_ids)
    assert len(browser.find_elements("css selector", "#map path.footprint")) == PLACES_TOP_K

    first = cards[0]
    other_date, other_tile = next((text, tile) for text, tile in first["dates"] if tile != first["tile"])
    browser.find_element("css selector", f".result:first-child .dates .date[data-tile-id='{other_tile}']").click()
    _wait(browser, lambda d: _cards(d)[0]["shown"] == [other_tile], f"the quicklook of {other_date}")
    _wait(browser, lambda d: _loaded_quicklooks(d) == PLACES_TOP_K, "the new quicklook loaded")
    shown = browser.find_element("css selector", ".result:first-child .dates .date.shown")
    assert shown.text == other_date
    requested = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(name.endswith(f"/api/tiles/{other_tile}/quicklook.png") for name in requested)
    assert not browser.find_element("id", "detail").is_displayed()  # a date click is not a card selection
