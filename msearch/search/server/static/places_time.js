// Places over time on the msearch page: the selected result's place as a timeline chart for the current query
// (GET /api/places/{id}/timeline), and a change mode that ranks places by change between dates (GET
// /api/change), listed as cards and drawn on the map. Loaded after app.js, whose map, layers and helpers
// (api, apiJson, setStatus, showResults, quicklookUrl, footprints, markers, map) it uses; app.js tells it of a
// selection with the "msearch:select" event.
// Its names stay inside one function scope: the page's other scripts share the global one.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const CHART = { width: 420, height: 150, left: 42, right: 10, top: 12, bottom: 24 };
  let timelineRequest = 0;

  function svg(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  // -- the timeline of the selected result's place ----------------------------------------------------------
  document.addEventListener("msearch:select", (event) => showTimeline(event.detail.tileId));

  async function showTimeline(tileId) {
    const box = $("timeline");
    const request = ++timelineRequest;
    const q = $("q").value.trim();
    const like = q ? null : state.like[0];
    if (!q && !like) {
      box.hidden = true;
      return;
    }
    try {
      const feature = state.features.find((f) => f.properties.tile_id === tileId);
      let placeId = feature && feature.properties.place_id;
      if (placeId === undefined || placeId === null) placeId = (await apiJson(`/api/tiles/${tileId}`)).place_id;
      const params = new URLSearchParams(q ? { q } : { like: String(like) });
      const lang = $("lang").value;
      if (q && lang && lang !== "auto") params.set("lang", lang);
      const timeline = await apiJson(`/api/places/${placeId}/timeline?${params}`);
      if (request !== timelineRequest) return;
      drawTimeline(box, timeline, tileId);
    } catch (error) {
      if (request !== timelineRequest) return;
      box.hidden = false;
      box.textContent = `no timeline: ${error.message}`;
    }
  }

  function drawTimeline(box, timeline, selectedTile) {
    box.replaceChildren();
    box.hidden = false;
    box.dataset.placeId = timeline.place_id;
    const title = document.createElement("div");
    title.className = "timeline-title";
    const n = timeline.acquisitions.length;
    title.textContent = `place ${timeline.place_id}: ${n} acquisition${n === 1 ? "" : "s"} · score for “${timeline.query}”`;
    box.appendChild(title);
    const points = timeline.acquisitions.filter((a) => a.score !== null && a.date);
    if (!points.length) {
      box.appendChild(document.createTextNode("no acquisition of this place has a date and a vector in this space"));
      return;
    }
    const times = points.map((a) => Date.parse(a.date));
    const scores = points.map((a) => a.score);
    const [t0, t1] = [Math.min(...times), Math.max(...times)];
    let [s0, s1] = [Math.min(...scores), Math.max(...scores)];
    const pad = (s1 - s0) * 0.1 || 0.01;
    [s0, s1] = [s0 - pad, s1 + pad];
    const plotWidth = CHART.width - CHART.left - CHART.right;
    const plotHeight = CHART.height - CHART.top - CHART.bottom;
    const x = (t) => CHART.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * plotWidth : plotWidth / 2);
    const y = (s) => CHART.top + (1 - (s - s0) / (s1 - s0)) * plotHeight;
    const chart = svg("svg", { class: "timeline-chart", viewBox: `0 0 ${CHART.width} ${CHART.height}`, role: "img" });
    svg("line", { class: "axis", x1: CHART.left, y1: CHART.top + plotHeight, x2: CHART.left + plotWidth, y2: CHART.top + plotHeight }, chart);
    svg("line", { class: "axis", x1: CHART.left, y1: CHART.top, x2: CHART.left, y2: CHART.top + plotHeight }, chart);
    for (const [value, anchor] of [[s1 - pad, "end"], [s0 + pad, "end"]]) {
      svg("text", { x: CHART.left - 4, y: y(value) + 4, "text-anchor": anchor }, chart).textContent = value.toFixed(3);
    }
    for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
      svg("text", { x: x(t), y: CHART.height - 6, "text-anchor": anchor }, chart).textContent = new Date(t).toISOString().slice(0, 10);
    }
    svg("polyline", { class: "line", points: points.map((a, i) => `${x(times[i])},${y(a.score)}`).join(" ") }, chart);
    points.forEach((a, i) => {
      const cloudy = a.cloud !== null && a.cloud > 20;
      const dot = svg("circle", {
        class: `point${cloudy ? " cloudy" : ""}${a.tile_id === selectedTile ? " selected" : ""}`,
        cx: x(times[i]),
        cy: y(a.score),
        r: 4,
        "data-tile-id": a.tile_id,
      }, chart);
      const cloud = a.cloud !== null ? ` · ${a.cloud.toFixed(0)}% cloud` : "";
      svg("title", {}, dot).textContent = `${a.date.slice(0, 10)} · ${a.score.toFixed(3)}${cloud} · tile ${a.tile_id}`;
      dot.addEventListener("click", () => showTimelineAcquisition(box, a));
    });
    box.appendChild(chart);
    const look = document.createElement("div");
    look.className = "timeline-look";
    box.appendChild(look);
  }

  async function showTimelineAcquisition(box, acquisition) {
    for (const dot of box.querySelectorAll("circle.point")) {
      dot.classList.toggle("selected", Number(dot.dataset.tileId) === acquisition.tile_id);
    }
    const look = box.querySelector(".timeline-look");
    look.textContent = `${acquisition.date.slice(0, 10)} · tile ${acquisition.tile_id} · score ${acquisition.score.toFixed(3)}`;
    try {
      const img = document.createElement("img");
      img.className = "quicklook";
      img.alt = acquisition.path;
      img.src = await quicklookUrl(acquisition.tile_id);
      look.prepend(img);
    } catch (error) {
      look.append(` (no quicklook: ${error.message})`);
    }
  }

  // -- change mode --------------------------------------------------------------------------------------------
  $("change-mode").addEventListener("click", () => {
    const on = $("change").hidden;
    $("change").hidden = !on;
    $("change-mode").classList.toggle("active", on);
  });

  $("change").addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const name of ["after", "before", "to", "from", "to_like", "top_k"]) {
      const value = $(`change-${name}`).value.trim();
      if (value) params.set(name, value);
    }
    if ($("change-any").checked) params.set("any", "true");
    const cloud = $("max_cloud").value.trim();
    if (cloud) params.set("max_cloud", cloud);
    if (state.bbox) params.set("bbox", state.bbox.join(","));
    showResults(null);
    $("timeline").hidden = true;
    setStatus("ranking places by change…");
    try {
      showChanges(await apiJson(`/api/change?${params}`));
    } catch (error) {
      setStatus(error.message, true);
    }
  });

  function showChanges(answer) {
    const list = $("results");
    showReading(answer);
    const n = answer.features.length;
    let text = `${n} place${n === 1 ? "" : "s"} ranked by change (${answer.places_compared} compared`;
    text += answer.left_out ? `; ${answer.left_out} left out: no acquisition in one of the periods)` : ")";
    setStatus(text);
    for (const feature of answer.features) {
      const p = feature.properties;
      const card = document.createElement("div");
      card.className = "result change-result";
      card.dataset.placeId = p.place_id;
      const pair = document.createElement("div");
      pair.className = "pair";
      for (const [label, tileId] of [["before", p.before_tile_id], ["after", p.after_tile_id]]) {
        const box = quicklookBox(tileId, `${label}: tile ${tileId}`);
        box.title = label;
        pair.appendChild(box);
      }
      const meta = document.createElement("div");
      meta.className = "meta";
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `#${p.rank} · change ${p.change.toFixed(3)}`;
      const scores = p.similarity !== null
        ? `cosine ${p.similarity.toFixed(3)}`
        : `${p.before_score.toFixed(3)} → ${p.after_score.toFixed(3)}`;
      meta.append(score, document.createElement("br"),
        document.createTextNode(`place ${p.place_id} · ${p.before_acquisitions} before / ${p.after_acquisitions} after · ${scores}`));
      card.append(pair, meta);
      card.addEventListener("click", () => {
        for (const other of list.querySelectorAll(".change-result")) other.classList.toggle("selected", other === card);
        footprints.eachLayer((layer) => layer.setStyle({ color: layer.placeId === p.place_id ? "#1f6feb" : "#e4572e" }));
      });
      list.appendChild(card);
      if (feature.geometry) {
        const layer = L.geoJSON(feature, { style: { color: "#e4572e", weight: 2, fillOpacity: 0.15, className: "footprint change" } });
        layer.placeId = p.place_id;
        layer.on("click", () => card.click());
        footprints.addLayer(layer);
      }
    }
    if (footprints.getLayers().length) map.fitBounds(footprints.getBounds(), { maxZoom: 11, padding: [30, 30] });
  }
})();
