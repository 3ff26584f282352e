/* The 3D view of a segmented series (templates/imaging/volume3d.html, docs/viewer.md "3D view").
   NiiVue renders the series as a volume with the tissue labelmap on it; the page's controls
   (labelmap opacity, clipping plane, standard views, highlight of the regions the atrophy
   check flagged) drive it. Built by frontend/build.mjs into static/vendor/brain3d/brain3d.js.
   Everything it needs comes from data-* attributes and one JSON block (no inline script:
   the site's CSP). */
import { Niivue, NVImage, SLICE_TYPE } from "@niivue/niivue";

// The flagged regions' colour: apart from the Okabe-Ito class colours (blue, orange, green).
const WARNING = [255, 51, 204];
// NiiVue's render camera: azimuth and elevation in degrees for each standard view (checked
// against NiiVue's orientation cube in the browser test's screenshots: L, R, A, P, S, I).
export const VIEWS = {
  left: { azimuth: 90, elevation: 0, name: "from the left" },
  right: { azimuth: 270, elevation: 0, name: "from the right" },
  anterior: { azimuth: 180, elevation: 0, name: "from the front" },
  posterior: { azimuth: 0, elevation: 0, name: "from behind" },
  superior: { azimuth: 0, elevation: 90, name: "from above" },
  inferior: { azimuth: 0, elevation: -90, name: "from below" },
};
// The clipping plane's orientation (the plane's normal as azimuth, elevation).
const CLIP = {
  sagittal: { azimuth: 90, elevation: 0, name: "left-right" },
  coronal: { azimuth: 180, elevation: 0, name: "front-back" },
  axial: { azimuth: 0, elevation: 90, name: "top-bottom" },
};
const CLIP_OFF = 2.0; // NiiVue: a depth above 1.73 disables the plane
const STEP = 15; // degrees per arrow key

function hexRgb(hex) {
  const n = parseInt(String(hex).replace("#", ""), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

async function fetchBuffer(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  document.dispatchEvent(new Event("medimg:server-activity"));
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error.message || message;
    } catch (_) {
      /* not JSON */
    }
    throw new Error(message);
  }
  return response.arrayBuffer();
}

/* Flagged voxels are drawn as label + offset, offset = the highest class index + 1: the
   colour table stays dense and small (NiiVue drew a sparse 0..100+ table as one colour). */
function flagOffset(classes) {
  return Math.max(0, ...classes.map((c) => c.index)) + 1;
}

/* The labelmap's colour table: each class in its colour, each flagged class (stored as
   label + offset) in the warning colour, every other index transparent. */
function colourTable(classes) {
  const offset = flagOffset(classes);
  const byIndex = new Map();
  classes.forEach((c) => {
    byIndex.set(c.index, [hexRgb(c.colour), c.name]);
    byIndex.set(c.index + offset, [WARNING, `${c.name} (flagged)`]);
  });
  const table = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  for (let index = 0; index < 2 * offset; index++) {
    const [rgb, name] = byIndex.get(index) || [[0, 0, 0], index === 0 ? "background" : ""];
    table.R.push(rgb[0]);
    table.G.push(rgb[1]);
    table.B.push(rgb[2]);
    table.A.push(byIndex.has(index) ? 255 : 0);
    table.I.push(index);
    table.labels.push(name);
  }
  return table;
}

/* Which voxels of the labelmap to mark: every flagged class, on the flagged side only when
   the entry names one and the page knows which half of the volume is the patient's left. */
export function markFlagged(original, dims, flagged, hemisphere, offset) {
  const out = new Uint8Array(original);
  if (!flagged || !flagged.length) return { labels: out, marked: 0 };
  const [nx, ny] = dims;
  const sides = new Map();
  flagged.forEach((f) => {
    const previous = sides.get(f.label);
    sides.set(f.label, previous && previous !== f.side ? "both" : f.side || "both");
  });
  let marked = 0;
  for (let v = 0; v < out.length; v++) {
    const side = sides.get(out[v]);
    if (!side) continue;
    if (side !== "both" && hemisphere) {
      const i = v % nx;
      const j = Math.floor(v / nx) % ny;
      const k = Math.floor(v / (nx * ny));
      const c = [k, j, i][hemisphere.axis]; // array axes (frames, rows, columns)
      const low = c < hemisphere.index;
      const isLeft = hemisphere.left === "low" ? low : !low;
      if ((side === "left") !== isLeft) continue;
    }
    out[v] = out[v] + offset;
    marked++;
  }
  return { labels: out, marked };
}

export async function mount(root) {
  const config = JSON.parse(document.getElementById(root.dataset.config).textContent);
  const canvas = root.querySelector("[data-brain3d-canvas]");
  const status = root.querySelector("[data-brain3d-status]");
  const description = root.querySelector("[data-brain3d-description]");
  const opacity = root.querySelector("[data-brain3d-opacity]");
  const opacityOut = root.querySelector("[data-brain3d-opacity-value]");
  const clipAxis = root.querySelector("[data-brain3d-clip]");
  const clipDepth = root.querySelector("[data-brain3d-clip-depth]");
  const clipOut = root.querySelector("[data-brain3d-clip-value]");
  const highlight = root.querySelector("[data-brain3d-highlight]");
  const say = (text, isError) => {
    status.textContent = text;
    status.classList.toggle("review__message--error", Boolean(isError));
  };
  // Legend swatches: the colour through the CSSOM (a style attribute would break the CSP).
  root.querySelectorAll("[data-colour]").forEach((swatch) => {
    swatch.style.backgroundColor = swatch.dataset.colour;
  });
  root.dataset.state = "loading";
  say("Loading the volume and its labelmap…");

  const state = { view: "left", azimuth: VIEWS.left.azimuth, elevation: VIEWS.left.elevation };
  const nv = new Niivue({
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: false,
    isColorbar: false,
    isOrientCube: true,
    clipPlaneColor: [0, 0, 0, 0], // the cut shows itself; a tinted plane hid the volume
    // NiiVue's own hotkeys (V: 2D views, C and P: clip planes) would leave the page's controls
    // out of step; the page's controls do those.
    viewModeHotKey: "",
    clipPlaneHotKey: "",
    cycleClipPlaneHotKey: "",
    dragAndDropEnabled: false,
    loadingText: "Loading",
    logLevel: "error",
    isResizeCanvas: true,
  });
  let labelImage = null;
  let originalLabels = null;

  function describe() {
    const view = VIEWS[state.view] ? VIEWS[state.view].name : `at azimuth ${state.azimuth}°, elevation ${state.elevation}°`;
    const clip = clipAxis.value === "off" ? "no clipping plane" : `a ${CLIP[clipAxis.value].name} clipping plane at ${clipDepth.value} %`;
    const flags = highlight && highlight.checked && root.dataset.marked !== "0" ? ", flagged regions highlighted" : "";
    const text = `3D rendering of the series with the tissue labelmap at ${opacity.value} % opacity, viewed ${view}, ${clip}${flags}.`;
    canvas.setAttribute("aria-label", text);
    description.textContent = text;
    root.dataset.view = state.view;
  }

  function rotate(azimuth, elevation, view) {
    state.azimuth = ((azimuth % 360) + 360) % 360;
    state.elevation = Math.max(-90, Math.min(90, elevation));
    state.view = view || "custom";
    nv.setRenderAzimuthElevation(state.azimuth, state.elevation);
    describe();
  }

  function applyOpacity() {
    opacityOut.textContent = `${opacity.value} %`;
    if (labelImage) nv.setOpacity(1, Number(opacity.value) / 100);
    describe();
  }

  function applyClip() {
    const on = clipAxis.value !== "off";
    clipDepth.disabled = !on;
    clipOut.textContent = on ? `${clipDepth.value} %` : "off";
    if (on) {
      const plane = CLIP[clipAxis.value];
      // -50..50 % of the volume either side of its centre.
      nv.setClipPlane([Number(clipDepth.value) / 100, plane.azimuth, plane.elevation]);
    } else {
      nv.setClipPlane([CLIP_OFF, 0, 0]);
    }
    root.dataset.clip = on ? `${clipAxis.value}:${clipDepth.value}` : "off";
    describe();
  }

  function applyHighlight() {
    if (!labelImage || !originalLabels) return;
    if (highlight && highlight.checked) {
      const { labels, marked } = markFlagged(originalLabels, [labelImage.hdr.dims[1], labelImage.hdr.dims[2]], config.flagged, config.hemisphere, flagOffset(config.classes));
      labelImage.img.set(labels);
      root.dataset.marked = String(marked);
    } else {
      labelImage.img.set(originalLabels);
      root.dataset.marked = "0";
    }
    nv.updateGLVolume();
    describe();
  }

  try {
    await nv.attachToCanvas(canvas);
    const [volumeBuffer, labelsBuffer] = await Promise.all([
      fetchBuffer(root.dataset.volumeUrl),
      fetchBuffer(root.dataset.labelsUrl),
    ]);
    const volume = await NVImage.loadFromUrl({ url: volumeBuffer, name: "volume.nii", colormap: "gray" });
    labelImage = await NVImage.loadFromUrl({ url: labelsBuffer, name: "labels.nii", opacity: Number(opacity.value) / 100 });
    labelImage.setColormapLabel(colourTable(config.classes));
    originalLabels = new Uint8Array(labelImage.img);
    nv.addVolume(volume);
    nv.addVolume(labelImage);
    nv.setSliceType(SLICE_TYPE.RENDER);
    root.niivue = nv; // for the browser tests and the console
    root.dataset.webgl = nv.gl ? "webgl2" : "none";
  } catch (err) {
    root.dataset.state = "failed";
    say(`The 3D view could not be shown: ${err.message}`, true);
    return null;
  }

  // Controls: every change goes straight to the renderer.
  opacity.addEventListener("input", applyOpacity);
  clipAxis.addEventListener("change", applyClip);
  clipDepth.addEventListener("input", applyClip);
  if (highlight) highlight.addEventListener("change", applyHighlight);
  root.querySelectorAll("[data-brain3d-view]").forEach((button) => {
    button.addEventListener("click", () => {
      const view = VIEWS[button.dataset.brain3dView];
      rotate(view.azimuth, view.elevation, button.dataset.brain3dView);
    });
  });
  // Keys on the focused canvas: arrows rotate, Home goes back to the left view.
  canvas.addEventListener("keydown", (event) => {
    const moves = {
      ArrowLeft: [-STEP, 0],
      ArrowRight: [STEP, 0],
      ArrowUp: [0, STEP],
      ArrowDown: [0, -STEP],
    };
    if (moves[event.key]) {
      event.preventDefault();
      rotate(state.azimuth + moves[event.key][0], state.elevation + moves[event.key][1]);
    } else if (event.key === "Home") {
      event.preventDefault();
      rotate(VIEWS.left.azimuth, VIEWS.left.elevation, "left");
    }
  });
  // Mouse rotation is NiiVue's own (left drag); keep the description in step with it.
  nv.onAzimuthElevationChange = (azimuth, elevation) => {
    if (azimuth !== state.azimuth || elevation !== state.elevation) {
      state.azimuth = azimuth;
      state.elevation = elevation;
      state.view = "custom";
      describe();
    }
  };

  rotate(VIEWS.left.azimuth, VIEWS.left.elevation, "left");
  applyOpacity();
  applyClip();
  applyHighlight();
  root.dataset.state = "ready";
  say("Rendered. Drag to rotate, or use the view buttons and the arrow keys.");
  return nv;
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-brain3d]").forEach((root) => {
    mount(root);
  });
});
