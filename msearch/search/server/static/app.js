// The msearch page: a search form, results as quicklooks and as footprints on a map, and relevance feedback.
// Everything it loads comes from the server it was served by. Its state (query, filters, examples) lives in
// the address, so a search can be reloaded and shared as a link.
"use strict";

const FIELDS = ["q", "lang", "top_k", "date_from", "date_to", "max_cloud"];
const TOKEN_KEY = "msearch-token";
const state = { bbox: null, like: [], unlike: [], features: [], selected: null };
const $ = (id) => document.getElementById(id);

// -- the map: Natural Earth land outlines, no tile server ------------------------------------------------
const map = L.map("map", { worldCopyJump: true, minZoom: 1 }).setView([30, 10], 2);
map.attributionControl.setPrefix(false);
map.attributionControl.addAttribution("land: Natural Earth (public domain)");
const footprints = L.featureGroup().addTo(map);
const markers = L.featureGroup().addTo(map);
let areaLayer = null;
map.createPane("land").style.zIndex = 250; // under the quicklooks (imagery.js)
const imagery = createImagery(map, quicklookUrl, (tileId, shown) =>
  markers.eachLayer((marker) => {
    if (marker.tileId === tileId && marker.getElement()) marker.getElement().classList.toggle("over-picture", shown);
  }),
);

fetch("/static/land-110m.geojson")
  .then((response) => response.json())
  .then((land) => {
    L.geoJSON(land, {
      interactive: false,
      pane: "land",
      renderer: L.svg({ pane: "land" }),
      style: { color: "#8a8f86", weight: 0.8, fillColor: "#f1eee4", fillOpacity: 1 },
    }).addTo(map);
  });

// -- requests ---------------------------------------------------------------------------------------------
async function api(path, options = {}, retried = false) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 && !retried) {
    const given = window.prompt("This server needs its access token:");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given.trim());
      return api(path, options, true);
    }
  }
  return response;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- state <-> address ------------------------------------------------------------------------------------
function readAddress() {
  const params = new URLSearchParams(window.location.search);
  for (const name of FIELDS) {
    const input = $(name);
    input.value = params.get(name) || (name === "lang" ? "auto" : name === "top_k" ? "12" : "");
  }
  const box = (params.get("bbox") || "").split(",").map(Number);
  state.bbox = box.length === 4 && box.every(Number.isFinite) ? box : null;
  state.like = idList(params.get("like"));
  state.unlike = idList(params.get("unlike"));
  drawArea();
  drawExamples();
}

function idList(text) {
  return (text || "").split(",").filter((v) => /^\d+$/.test(v)).map(Number);
}

function writeAddress(push) {
  const params = new URLSearchParams();
  for (const name of FIELDS) {
    const value = $(name).value.trim();
    if (value && !(name === "lang" && value === "auto")) params.set(name, value);
  }
  if (state.bbox) params.set("bbox", state.bbox.map((v) => v.toFixed(4)).join(","));
  if (state.like.length) params.set("like", state.like.join(","));
  if (state.unlike.length) params.set("unlike", state.unlike.join(","));
  const address = "/?" + params.toString();
  if (address !== window.location.pathname + window.location.search) {
    (push ? history.pushState : history.replaceState).call(history, null, "", address);
  }
}

// -- searching --------------------------------------------------------------------------------------------
async function search() {
  const q = $("q").value.trim();
  if (!q && !state.like.length) {
    showResults(null);
    setStatus("Type what to look for, or 👍 a tile.");
    return;
  }
  const filters = {};
  for (const name of ["lang", "top_k", "date_from", "date_to", "max_cloud"]) {
    const value = $(name).value.trim();
    if (value && !(name === "lang" && value === "auto")) filters[name] = value;
  }
  if (state.bbox) filters.bbox = state.bbox.join(",");
  setStatus("searching…");
  try {
    let answer;
    if (state.like.length || state.unlike.length) {
      const body = Object.assign({}, filters, { like: state.like, unlike: state.unlike });
      if (q) body.q = q;
      if (body.top_k) body.top_k = Number(body.top_k);
      if (body.max_cloud) body.max_cloud = Number(body.max_cloud);
      answer = await apiJson("/api/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } else {
      answer = await apiJson("/api/search?" + new URLSearchParams(Object.assign({ q }, filters)).toString());
    }
    showResults(answer);
  } catch (error) {
    showResults(null);
    setStatus(error.message, true);
  }
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// How the answer's text was read: its language, the space searched and, beyond English, the route taken.
function showReading(answer) {
  const via = answer && answer.route ? ` (route ${answer.route})` : "";
  $("detected").textContent = answer && answer.lang ? `read as ${answer.lang} → ${answer.space}${via}` : answer ? `→ ${answer.space}` : "";
}

function showResults(answer) {
  const list = $("results");
  list.replaceChildren();
  footprints.clearLayers();
  markers.clearLayers();
  imagery.clear();
  clearSelection();
  state.features = answer ? answer.features : [];
  if (!answer && typeof heat !== "undefined") heat.attach(null);
  showReading(answer);
  if (!answer) return;
  const n = answer.features.length;
  let text = `${n} result${n === 1 ? "" : "s"}`;
  if (answer.per_place) text = `${n} place${n === 1 ? "" : "s"}`;
  if (answer.matching_tiles !== null && answer.matching_tiles !== undefined) text += ` (${answer.matching_tiles} tiles match the filters)`;
  if (answer.truncated) text += " · the query was cut to the text encoder's 77 tokens";
  setStatus(text);
  for (const feature of answer.features) {
    list.appendChild(resultCard(feature));
    if (feature.geometry) {
      // No fill tint over the quicklook; the fill stays, transparent, so that the whole footprint is a target.
      const layer = L.geoJSON(feature, {
        style: { color: "#e4572e", weight: 2, fillOpacity: 0, className: "footprint" },
        pointToLayer: (_f, latlng) => L.circleMarker(latlng, { radius: 6, className: "footprint" }),
      });
      layer.tileId = feature.properties.tile_id;
      layer.on("click", () => select(feature.properties.tile_id, true));
      layer.on("mouseover", () => imagery.hover(feature.properties.tile_id));
      layer.on("mouseout", () => imagery.hover(null));
      footprints.addLayer(layer);
      // A footprint of a few hundred metres is a dot at regional zoom: a marker at its centre stays visible.
      const centre = layer.getBounds().getCenter();
      const marker = L.circleMarker(centre, { radius: 6, color: "#e4572e", fillOpacity: 0.5, className: "centre" });
      marker.tileId = feature.properties.tile_id;
      marker.bindTooltip(`#${feature.properties.rank}`);
      marker.on("click", () => select(feature.properties.tile_id, true));
      marker.on("mouseover", () => imagery.hover(feature.properties.tile_id));
      marker.on("mouseout", () => imagery.hover(null));
      markers.addLayer(marker);
    }
  }
  imagery.show(answer.features);
  // Not animated: a card clicked while an animated zoom runs would have its own zoom dropped by Leaflet.
  if (footprints.getLayers().length)
    map.fitBounds(footprints.getBounds(), { maxZoom: 11, padding: [30, 30], animate: false });
  if (typeof heat !== "undefined") heat.attach(answer); // heatmaps.js: a heat toggle per card
}

function resultCard(feature) {
  const p = feature.properties;
  const card = document.createElement("div");
  card.className = "result";
  card.dataset.tileId = p.tile_id;
  const thumb = quicklookBox(p.tile_id, p.path);
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = p.probability !== undefined ? `#${p.rank} · p ${p.probability.toFixed(3)}${p.label ? " · " + p.label : ""}` : `#${p.rank} · ${p.score.toFixed(3)}`;
  meta.append(score, document.createElement("br"));
  meta.append(document.createTextNode([p.date ? p.date.slice(0, 10) : null, p.tile, p.cloud !== null ? `${p.cloud.toFixed(0)}% cloud` : null].filter(Boolean).join(" · ") || `tile ${p.tile_id}`));
  meta.append(document.createElement("br"), document.createTextNode(p.path));
  const votes = document.createElement("div");
  votes.className = "votes";
  votes.append(
    voteButton("like", "👍 more", "more like this: search again with this tile as an example", () => vote(p.tile_id, "like")),
    voteButton("unlike", "👎 less", "less like this: search again moving away from this tile", () => vote(p.tile_id, "unlike")),
  );
  card.append(thumb, meta, votes);
  placeStrip(card, p); // places.js: a place's dates
  card.addEventListener("click", () => select(p.tile_id, false));
  card.addEventListener("mouseenter", () => imagery.hover(p.tile_id));
  card.addEventListener("mouseleave", () => imagery.hover(null));
  return card;
}

function voteButton(kind, label, title, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.title = title;
  button.className = kind;
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    action();
  });
  return button;
}

function vote(tileId, list) {
  // collections.js labels the tile in the chosen collection; in its detect views that is all a vote does
  if (window.onVote && window.onVote(tileId, list)) return;
  const other = list === "like" ? "unlike" : "like";
  state[other] = state[other].filter((t) => t !== tileId);
  if (!state[list].includes(tileId)) state[list].push(tileId);
  drawExamples();
  writeAddress(true);
  search();
}

function drawExamples() {
  for (const list of ["like", "unlike"]) {
    const holder = $(list === "like" ? "liked" : "unliked");
    holder.replaceChildren();
    for (const tileId of state[list]) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.append(document.createTextNode(`tile ${tileId}`));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = "remove this example";
      remove.addEventListener("click", () => {
        state[list] = state[list].filter((t) => t !== tileId);
        drawExamples();
        writeAddress(true);
        search();
      });
      chip.append(remove);
      holder.append(chip);
    }
  }
  $("examples").hidden = !(state.like.length || state.unlike.length);
}

// -- quicklooks, loaded when they scroll into view -------------------------------------------------------
const quicklookUrls = new Map(); // tile id -> a promise of the object URL of its PNG
const watcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (entry.isIntersecting) {
      watcher.unobserve(entry.target);
      loadQuicklook(entry.target);
    }
  }
}, { rootMargin: "200px" });

function quicklookBox(tileId, alt) {
  const box = document.createElement("div");
  box.className = "thumb";
  box.dataset.tileId = tileId;
  box.dataset.alt = alt;
  box.textContent = "…";
  watcher.observe(box);
  return box;
}

// One request per tile: the card and the map ask at the same time, and share the answer.
function quicklookUrl(tileId) {
  if (!quicklookUrls.has(tileId)) {
    const loading = fetchQuicklook(tileId);
    loading.catch(() => quicklookUrls.delete(tileId)); // asked again next time
    quicklookUrls.set(tileId, loading);
  }
  return quicklookUrls.get(tileId);
}

async function fetchQuicklook(tileId) {
  const response = await api(`/api/tiles/${tileId}/quicklook.png`);
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || "no quicklook");
  return URL.createObjectURL(await response.blob());
}

async function loadQuicklook(box) {
  try {
    const img = document.createElement("img");
    img.className = "quicklook";
    img.alt = box.dataset.alt;
    img.src = await quicklookUrl(Number(box.dataset.tileId));
    box.replaceChildren(img);
  } catch (error) {
    box.textContent = "no quicklook";
    box.title = error.message;
  }
}

// -- selection: a card and its footprint, and the tile's details -------------------------------------------
function clearSelection() {
  state.selected = null;
  $("detail").hidden = true;
}

async function select(tileId, fromMap) {
  state.selected = tileId;
  document.dispatchEvent(new CustomEvent("msearch:select", { detail: { tileId } })); // places_time.js: its timeline
  for (const card of document.querySelectorAll(".result")) {
    const on = Number(card.dataset.tileId) === tileId;
    card.classList.toggle("selected", on);
    if (on && fromMap) card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  let bounds = null;
  footprints.eachLayer((layer) => {
    const on = layer.tileId === tileId;
    layer.setStyle({ color: on ? "#1f6feb" : "#e4572e", weight: on ? 3 : 2 });
    if (on) {
      layer.bringToFront();
      bounds = layer.getBounds();
    }
  });
  markers.eachLayer((marker) => marker.setStyle({ color: marker.tileId === tileId ? "#1f6feb" : "#e4572e" }));
  if (bounds && !fromMap) map.fitBounds(bounds, { maxZoom: 15, padding: [60, 60] }); // close enough to see the picture
  try {
    const [tile, url] = await Promise.all([apiJson(`/api/tiles/${tileId}`), quicklookUrl(tileId).catch(() => null)]);
    if (state.selected !== tileId) return;
    showDetail(tile, url);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function showDetail(tile, url) {
  const detail = $("detail");
  detail.replaceChildren();
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (url) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = tile.key;
    thumb.append(img);
  } else {
    thumb.textContent = "no quicklook";
  }
  const fields = document.createElement("dl");
  const rows = [
    ["tile id", tile.id], ["file", tile.key], ["under", tile.root], ["date", tile.acquired], ["MGRS tile", tile.mgrs_tile],
    ["cloud %", tile.cloud_cover], ["scene", tile.scene], ["window", tile.window], ["bands", tile.bands],
    ["centre", tile.centre_lat !== null && tile.centre_lat !== undefined ? `${tile.centre_lat.toFixed(4)}, ${tile.centre_lon.toFixed(4)}` : null],
  ];
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    fields.append(dt, dd);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.className = "close";
  close.textContent = "×";
  close.title = "close";
  close.addEventListener("click", clearSelection);
  detail.append(thumb, fields, close);
  detail.hidden = false;
}

// -- the search area: drag a box on the map ---------------------------------------------------------------
function drawArea() {
  if (areaLayer) map.removeLayer(areaLayer);
  areaLayer = null;
  if (state.bbox) {
    const [w, s, e, n] = state.bbox;
    areaLayer = L.rectangle([[s, w], [n, e]], { color: "#1f6feb", weight: 1, fillOpacity: 0.05, interactive: false }).addTo(map);
  }
  $("clear-area").hidden = !state.bbox;
}

let dragStart = null;
$("draw").addEventListener("click", () => {
  const on = !$("draw").classList.contains("active");
  $("draw").classList.toggle("active", on);
  if (on) map.dragging.disable();
  else map.dragging.enable();
});
map.on("mousedown", (event) => {
  if (!$("draw").classList.contains("active")) return;
  dragStart = event.latlng;
});
map.on("mousemove", (event) => {
  if (!dragStart) return;
  const a = dragStart, b = event.latlng;
  state.bbox = [Math.min(a.lng, b.lng), Math.min(a.lat, b.lat), Math.max(a.lng, b.lng), Math.max(a.lat, b.lat)];
  state.bbox = [Math.max(-180, state.bbox[0]), Math.max(-90, state.bbox[1]), Math.min(180, state.bbox[2]), Math.min(90, state.bbox[3])];
  drawArea();
});
map.on("mouseup", () => {
  if (!dragStart) return;
  dragStart = null;
  $("draw").classList.remove("active");
  map.dragging.enable();
  writeAddress(true);
  search();
});
$("clear-area").addEventListener("click", () => {
  state.bbox = null;
  drawArea();
  writeAddress(true);
  search();
});
$("clear-examples").addEventListener("click", () => {
  state.like = [];
  state.unlike = [];
  drawExamples();
  writeAddress(true);
  search();
});

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  writeAddress(true);
  search();
});
window.addEventListener("popstate", () => {
  readAddress();
  search();
});

readAddress();
search();
