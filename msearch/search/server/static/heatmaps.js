// Heat overlays: where in each result the query matches (GET /api/tiles/{id}/heatmap.png). A "heat" button on
// every card lays the tile's heat over its quicklook and over its footprint on the map; the "heat" button on
// the map does it for every result. Maps are asked for only when a button is pressed, after the results are
// shown, so they never hold up a search; the server computes each once and keeps it, the page keeps the images.
// Uses app.js's globals: api (requests with the token), map, and the `heat` hook that app.js calls per search.
"use strict";

const heat = (() => {
  const images = new Map(); // "tile id|query" -> object URL of the heat PNG
  const shown = new Map(); // tile id -> { layer, img, button }
  const features = new Map(); // tile id -> GeoJSON feature of the current results
  let query = null; // URL parameters that say what the current results were searched for
  map.createPane("heat").style.zIndex = 375; // over the quicklooks (imagery.js, 350), under the footprints (400)

  // What to score the patches against: the text, else the first liked tile (a search by example).
  function queryOf(answer) {
    const params = new URLSearchParams();
    if (answer.query && !answer.query.startsWith("like:")) {
      params.set("q", answer.query);
      if (answer.lang) params.set("lang", answer.lang);
      if (answer.space && !answer.space.includes("+") && !answer.route) params.set("space", answer.space);
      return params;
    }
    const liked = (answer.like && answer.like.length) ? answer.like : (answer.query || "").slice(5).split(",");
    if (!/^\d+$/.test(String(liked[0] || ""))) return null;
    params.set("like", liked[0]);
    if (answer.space && !answer.space.includes("+")) params.set("space", answer.space);
    return params;
  }

  async function imageUrl(tileId) {
    const key = `${tileId}|${query}`;
    if (!images.has(key)) {
      const response = await api(`/api/tiles/${tileId}/heatmap.png?${query}`);
      if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || "no heat map");
      images.set(key, URL.createObjectURL(await response.blob()));
    }
    return images.get(key);
  }

  async function show(tileId, button) {
    button.classList.add("loading");
    try {
      const url = await imageUrl(tileId);
      if (!features.has(tileId) || shown.has(tileId)) return; // new results came, or shown meanwhile
      const img = document.createElement("img");
      img.className = "heat";
      img.alt = "heat map";
      img.src = url;
      const thumb = document.querySelector(`.result[data-tile-id="${tileId}"] .thumb`);
      if (thumb) thumb.append(img);
      let layer = null;
      const feature = features.get(tileId);
      if (feature.geometry && feature.geometry.type === "Polygon") {
        const bounds = L.geoJSON(feature).getBounds();
        layer = L.imageOverlay(url, bounds, { pane: "heat", className: "heat-overlay", interactive: false }).addTo(map);
      }
      shown.set(tileId, { layer, img, button });
      button.classList.add("on");
      button.title = "hide where the query matches";
    } catch (error) {
      button.title = error.message;
      button.classList.add("failed");
    } finally {
      button.classList.remove("loading");
    }
  }

  function hide(tileId) {
    const entry = shown.get(tileId);
    if (!entry) return;
    if (entry.layer) map.removeLayer(entry.layer);
    entry.img.remove();
    entry.button.classList.remove("on");
    entry.button.title = "show where in this tile the query matches";
    shown.delete(tileId);
  }

  function toggle(tileId, button) {
    if (shown.has(tileId)) hide(tileId);
    else show(tileId, button);
  }

  // The map's button: every result's heat on, or all off.
  const all = L.control({ position: "topright" });
  all.onAdd = () => {
    const button = L.DomUtil.create("button", "heat-all");
    button.type = "button";
    button.textContent = "heat";
    button.title = "show where in each result the query matches";
    L.DomEvent.disableClickPropagation(button);
    button.addEventListener("click", () => {
      const buttons = [...document.querySelectorAll(".result button.heat")];
      if (shown.size) {
        for (const tileId of [...shown.keys()]) hide(tileId);
      } else {
        for (const b of buttons) show(Number(b.dataset.tileId), b);
      }
    });
    return button;
  };
  all.addTo(map);

  // app.js calls this once the results are on the page: a button per card, nothing requested yet.
  function attach(answer) {
    for (const tileId of [...shown.keys()]) hide(tileId);
    features.clear();
    query = answer ? queryOf(answer) : null;
    if (!answer || !query) return;
    for (const feature of answer.features) features.set(feature.properties.tile_id, feature);
    for (const card of document.querySelectorAll(".result")) {
      const tileId = Number(card.dataset.tileId);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "heat";
      button.dataset.tileId = tileId;
      button.textContent = "🔥 heat";
      button.title = "show where in this tile the query matches";
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        toggle(tileId, button);
      });
      const votes = card.querySelector(".votes");
      (votes || card).append(button);
    }
  }

  return { attach };
})();
