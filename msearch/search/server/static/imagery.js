// Imagery on the map: each result's quicklook laid over its footprint (a Leaflet imageOverlay whose bounds are
// the catalogue's WGS84 footprint), in a pane above the land and below the footprint outlines, so the place can
// be recognised at the zoom of a result. Still offline: the pictures are the server's own quicklooks.
// A footprint smaller on screen than MIN_IMAGE_PIXELS shows no picture: at low zoom, results far apart stay
// footprints and markers. A picture is fetched only once its footprint is that large and near the view (a
// search of 200 results far apart reads no tile for the map); where a picture shows, `onShown` hears it (the
// page hides that tile's centre marker, which would cover it). Hovering a card highlights its picture, and
// hovering a picture (or its footprint or marker) highlights its card.
"use strict";

const MIN_IMAGE_PIXELS = 12;

function createImagery(map, quicklookUrl, onShown) {
  map.createPane("imagery").style.zIndex = 350; // above the land pane (250), below footprints (overlayPane, 400)
  const layer = L.layerGroup().addTo(map);
  const waiting = new Map(); // tile id -> footprint bounds, for results whose picture is not asked for yet
  const overlays = new Map(); // tile id -> L.imageOverlay
  let generation = 0; // the search the overlays belong to: a picture that arrives for an older one is dropped

  function footprintBounds(geometry) {
    const ring = geometry.coordinates[0];
    const lons = ring.map((p) => p[0]);
    const lats = ring.map((p) => p[1]);
    return L.latLngBounds([Math.min(...lats), Math.min(...lons)], [Math.max(...lats), Math.max(...lons)]);
  }

  function tooSmall(bounds) {
    const size = map.latLngToLayerPoint(bounds.getNorthEast()).subtract(map.latLngToLayerPoint(bounds.getSouthWest()));
    return Math.min(Math.abs(size.x), Math.abs(size.y)) < MIN_IMAGE_PIXELS;
  }

  function show(features) {
    clear();
    for (const feature of features) {
      if (feature.geometry && feature.geometry.type === "Polygon") {  // a centre point has no extent
        waiting.set(feature.properties.tile_id, footprintBounds(feature.geometry));
      }
    }
    update();
  }

  function clear() {
    generation += 1;
    waiting.clear();
    layer.clearLayers();
    overlays.clear();
  }

  function update() {
    const near = map.getBounds().pad(0.5);
    for (const [tileId, bounds] of waiting) {
      if (near.intersects(bounds) && !tooSmall(bounds)) {
        waiting.delete(tileId);
        load(tileId, bounds, generation);
      }
    }
    overlays.forEach(fitToZoom);
  }

  function load(tileId, bounds, current) {
    quicklookUrl(tileId)
      .then((url) => {
        if (current !== generation) return;
        const overlay = L.imageOverlay(url, bounds, {
          pane: "imagery",
          className: "imagery",
          interactive: true,
          alt: `quicklook of tile ${tileId}`,
        });
        overlay.tileId = tileId;
        overlay.on("mouseover", () => hover(tileId));
        overlay.on("mouseout", () => hover(null));
        overlay.addTo(layer);
        overlay.getElement().dataset.tileId = tileId;
        overlays.set(tileId, overlay);
        fitToZoom(overlay);
      })
      .catch(() => {}); // no picture: the footprint alone, as before (the card says why)
  }

  function fitToZoom(overlay) {
    const small = tooSmall(overlay.getBounds());
    overlay.getElement().classList.toggle("too-small", small);
    onShown(overlay.tileId, !small);
  }

  function hover(tileId) {
    for (const [id, overlay] of overlays) overlay.getElement().classList.toggle("hovered", id === tileId);
    for (const card of document.querySelectorAll(".result")) {
      card.classList.toggle("hovered", Number(card.dataset.tileId) === tileId);
    }
  }

  map.on("moveend", update); // after a zoom too
  return { show, clear, hover };
}
