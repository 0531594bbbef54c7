// Places on the msearch page: a result of a per-place search is a place, shown as one card with a strip of the
// dates of its acquisitions that pass the filters. Clicking a date shows that acquisition's quicklook in the
// card. app.js calls placeStrip(card, properties) for every result card (its one hook into this file).
"use strict";

// The dates of a place's acquisitions, in date order, the best-matching one (the card's own tile) marked.
function placeStrip(card, p) {
  if (p.acquisitions === null || p.acquisitions === undefined || !p.dates) return;
  card.classList.add("place");
  card.dataset.placeId = p.place_id;
  const strip = document.createElement("div");
  strip.className = "dates";
  strip.title = `place ${p.place_id}: ${p.acquisitions} acquisition${p.acquisitions === 1 ? "" : "s"} match`;
  const entries = p.dates.map((date, i) => ({ date, tileId: p.date_tile_ids[i], rank: i }));
  entries.sort((a, b) => String(a.date).localeCompare(String(b.date)));
  for (const entry of entries) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "date" + (entry.tileId === p.tile_id ? " best shown" : "");
    button.dataset.tileId = entry.tileId;
    button.textContent = entry.date ? entry.date.slice(0, 10) : "undated";
    button.title = `#${entry.rank + 1} of this place's dates for the query (tile ${entry.tileId})`;
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      showAcquisition(card, entry.tileId, button);
    });
    strip.append(button);
  }
  if (p.acquisitions > p.dates.length) {
    const more = document.createElement("span");
    more.className = "more";
    more.textContent = `+${p.acquisitions - p.dates.length}`;
    more.title = "more acquisitions match than are listed (the best are)";
    strip.append(more);
  }
  card.append(strip);
}

async function showAcquisition(card, tileId, button) {
  for (const other of card.querySelectorAll(".dates .date")) other.classList.toggle("shown", other === button);
  card.dataset.shownTileId = tileId;
  const box = card.querySelector(".thumb");
  try {
    const url = await quicklookUrl(tileId); // app.js: the PNG of /api/tiles/{id}/quicklook.png, cached
    if (card.dataset.shownTileId !== String(tileId)) return; // another date was clicked meanwhile
    const img = document.createElement("img");
    img.className = "quicklook";
    img.alt = `tile ${tileId}`;
    img.dataset.tileId = tileId;
    img.src = url;
    box.replaceChildren(img);
  } catch (error) {
    box.textContent = "no quicklook";
    box.title = error.message;
  }
}
