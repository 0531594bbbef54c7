"""The page's collections in headless chromium against a real `msearch serve` over a planted index: create a
collection, like two tiles, detect, and see the detections drawn on the map with their probabilities."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from tests.search.live_server import live_server
from tests.search.planted import planted_ids
from tests.search.test_server_page import _result_ids, _wait, browser  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def planted_server(planted_index, tmp_path_factory):
    directory = tmp_path_factory.mktemp("collections-page") / "index"
    shutil.copytree(planted_index, directory)
    with live_server(directory, directory.parent / "serve.log") as base:
        yield base


def _footprints(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#map path.footprint').length")


def test_like_two_tiles_detect_and_see_detections_on_the_map(planted_server, browser):  # noqa: F811
    first = planted_ids()[0]
    browser.get(f"{planted_server}/?like={first}&top_k=12")  # a search by example: no model needed
    _wait(browser, lambda d: len(_result_ids(d)) == 12, "12 results of the search by example")
    assert not browser.find_element("id", "detect").is_enabled()  # no collection: the page searches as before

    browser.find_element("id", "new-collection").send_keys("planted")
    browser.find_element("id", "create-collection").click()
    _wait(
        browser, lambda d: d.find_element("id", "collection").get_attribute("value") == "planted", "the new collection"
    )
    liked = []
    for _ in range(2):  # like two planted tiles (each like also refines the search, which redraws the cards)
        tile_id = next(t for t in _result_ids(browser) if t in planted_ids() and t not in liked)
        browser.execute_script(f"document.querySelector('.result[data-tile-id=\"{tile_id}\"] button.like').click()")
        liked.append(tile_id)
        _wait(
            browser,
            lambda d: d.find_element("id", "collection-counts").text.startswith(f"{len(liked)} positive"),
            f"{len(liked)} positive labels",
        )
    with urllib.request.urlopen(f"{planted_server}/api/collections/planted/labels") as response:
        labels = json.load(response)
    assert sorted(item["tile_id"] for item in labels["labels"]) == sorted(liked)

    browser.find_element("id", "detect").click()
    _wait(browser, lambda d: "detections with probability" in d.find_element("id", "status").text, "detections")
    shown = _result_ids(browser)
    assert shown and set(shown) <= set(planted_ids())  # every tile above 0.5 is a planted one
    assert _footprints(browser) == len(shown)
    first_card = browser.find_element("css selector", ".result .score").text
    assert " · p 0." in first_card
    assert "cross-validated" in browser.find_element("id", "status").text

    browser.execute_script(
        "const s = document.getElementById('threshold'); s.value = '0.99'; s.dispatchEvent(new Event('input'))"
    )
    _wait(browser, lambda d: len(_result_ids(d)) < len(shown), "fewer detections above 0.99")
    assert _footprints(browser) == len(_result_ids(browser))

    browser.find_element("id", "suggest").click()
    _wait(browser, lambda d: "label these next" in d.find_element("id", "status").text, "suggestions")
    assert len(_result_ids(browser)) == 12 and not set(_result_ids(browser)) & set(liked)
