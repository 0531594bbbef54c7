// Collections and detectors on the page: 👍/👎 also label the tile in the chosen collection; "detect" shows the
// detector's ranked tiles on the map with their probabilities and a threshold slider; "label these next" shows
// the tiles it is least sure of. Without a collection the page searches as before.
"use strict";

const COLLECTION_KEY = "msearch-collection";
const detection = { answer: null, view: null }; // view: null (search), "detect" or "suggest"

function collectionName() {
  return $("collection").value;
}

async function loadCollections(choose) {
  const body = await apiJson("/api/collections");
  const select = $("collection");
  const wanted = choose !== undefined ? choose : sessionStorage.getItem(COLLECTION_KEY) || "";
  select.replaceChildren(new Option("none", ""));
  for (const item of body.collections) {
    select.append(new Option(`${item.name} (${item.space})`, item.name));
  }
  select.value = body.collections.some((c) => c.name === wanted) ? wanted : "";
  showCounts(body.collections.find((c) => c.name === select.value));
}

function showCounts(item) {
  $("collection-counts").textContent = item ? `${item.positives} positive, ${item.negatives} negative` : "";
  $("detect").disabled = $("suggest").disabled = !item;
  sessionStorage.setItem(COLLECTION_KEY, item ? item.name : "");
}

async function refreshCounts() {
  const name = collectionName();
  if (!name) return showCounts(null);
  const labels = await apiJson(`/api/collections/${encodeURIComponent(name)}/labels`);
  showCounts(labels);
}

window.onVote = (tileId, list) => {
  const name = collectionName();
  if (!name) return false;
  const body = { [list === "like" ? "positive" : "negative"]: [tileId] };
  apiJson(`/api/collections/${encodeURIComponent(name)}/labels`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  })
    .then((answer) => {
      showCounts(answer.collection);
      const card = document.querySelector(`.result[data-tile-id="${tileId}"]`);
      if (card) card.classList.add("labelled");
    })
    .catch((error) => setStatus(error.message, true));
  return detection.view !== null; // in the detect views a vote labels; in a search it also refines the search
};

function detectionFilters() {
  const params = {};
  for (const name of ["date_from", "date_to", "max_cloud"]) {
    const value = $(name).value.trim();
    if (value) params[name] = value;
  }
  if (state.bbox) params.bbox = state.bbox.join(",");
  return params;
}

async function runDetector(view) {
  const name = encodeURIComponent(collectionName());
  setStatus(view === "detect" ? "fitting the detector and scoring the archive…" : "finding the tiles to label next…");
  try {
    const params = new URLSearchParams(Object.assign(view === "detect" ? { top_k: "200" } : { n: "12" }, detectionFilters()));
    const answer = await apiJson(`/api/collections/${name}/${view}?${params.toString()}`);
    detection.answer = answer;
    detection.view = view;
    $("threshold-box").hidden = view !== "detect";
    showDetections();
  } catch (error) {
    setStatus(error.message, true);
  }
}

function showDetections() {
  const answer = detection.answer;
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  const shown = detection.view === "detect" ? answer.features.filter((f) => f.properties.probability >= threshold) : answer.features;
  showResults(Object.assign({}, answer, { features: shown }));
  const cv = answer.fit.cross_validation;
  const fit = `fitted on ${answer.fit.positives} positive, ${answer.fit.negatives} negative` +
    (answer.fit.background_negatives ? ` + ${answer.fit.background_negatives} unlabelled tiles as negatives` : "") +
    (cv.average_precision !== undefined ? `; cross-validated precision ${cv.precision.toFixed(2)}, recall ${cv.recall.toFixed(2)}, AP ${cv.average_precision.toFixed(2)}` : "");
  const what = detection.view === "detect"
    ? `${shown.length} detections with probability ≥ ${threshold.toFixed(2)} (of the top ${answer.features.length})`
    : `label these next: the ${shown.length} tiles the detector is least sure of`;
  setStatus(`${what} · ${fit}`);
}

function leaveDetections() {
  detection.view = null;
  detection.answer = null;
  $("threshold-box").hidden = true;
}

$("collection").addEventListener("change", () => {
  leaveDetections();
  refreshCounts().catch((error) => setStatus(error.message, true));
});
$("create-collection").addEventListener("click", async () => {
  const name = $("new-collection").value.trim();
  if (!name) return setStatus("type a name for the new collection", true);
  try {
    await apiJson("/api/collections", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    $("new-collection").value = "";
    await loadCollections(name);
  } catch (error) {
    setStatus(error.message, true);
  }
});
$("detect").addEventListener("click", () => runDetector("detect"));
$("suggest").addEventListener("click", () => runDetector("suggest"));
$("threshold").addEventListener("input", () => {
  if (detection.view === "detect") showDetections();
});
$("search").addEventListener("submit", leaveDetections);

loadCollections().catch((error) => setStatus(error.message, true));
