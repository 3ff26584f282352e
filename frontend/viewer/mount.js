/* Mounts a Cornerstone stack viewport in a static/js/viewer.js viewer (see index.js). */
import {
  Enums as CoreEnums,
  RenderingEngine,
  getRenderingEngine,
  getShouldUseCPURendering,
  init as coreInit,
  setUseCPURendering,
  utilities as coreUtils,
} from "@cornerstonejs/core";
import {
  AngleTool,
  EllipticalROITool,
  Enums as ToolEnums,
  LengthTool,
  PanTool,
  ProbeTool,
  RectangleROITool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  annotation,
  init as toolsInit,
  synchronizers,
  utilities as toolUtils,
} from "@cornerstonejs/tools";
import { dicomSource, dropSource, pngSource, registerLoader } from "./images.js";

const { MouseBindings } = ToolEnums;
const MEASURE = [LengthTool, AngleTool, RectangleROITool, EllipticalROITool, ProbeTool];
// OHIF's default window presets on the number keys (width, level).
const OHIF_PRESETS = [
  { name: "Soft tissue", width: 400, centre: 40 },
  { name: "Lung", width: 1500, centre: -600 },
  { name: "Liver", width: 150, centre: 90 },
  { name: "Bone", width: 2500, centre: 480 },
  { name: "Brain", width: 80, centre: 40 },
];
const TOOLS = [
  { name: WindowLevelTool.toolName, label: "W/L", key: "w", title: "Window/level (left drag)" },
  { name: PanTool.toolName, label: "Pan", key: "p", title: "Pan (middle drag)" },
  { name: ZoomTool.toolName, label: "Zoom", key: "z", title: "Zoom (right drag)" },
  { name: LengthTool.toolName, label: "Length", key: "m", title: "Length in mm" },
  { name: AngleTool.toolName, label: "Angle", key: "a", title: "Angle" },
  { name: RectangleROITool.toolName, label: "Rectangle", key: "b", title: "Rectangle ROI" },
  { name: EllipticalROITool.toolName, label: "Ellipse", key: "e", title: "Ellipse ROI" },
  { name: ProbeTool.toolName, label: "Probe", key: "o", title: "Probe (HU on CT)" },
];
export const SHORTCUTS = [
  ["Left drag", "Window/level (or the selected tool)"],
  ["Right drag", "Zoom"],
  ["Middle drag", "Pan"],
  ["Wheel, ↑ ↓", "Previous / next frame"],
  ["1 – 5", "Window presets"],
  ["+ − =", "Zoom in / out"],
  ["Space", "Reset the view"],
  ["I", "Invert"],
  ["R / L", "Rotate right / left"],
  ["H / V", "Flip horizontally / vertically"],
  ["W P Z M A B E O", "Tools: W/L, pan, zoom, length, angle, rectangle, ellipse, probe"],
  ["C", "Play / stop cine"],
  [", / .", "Previous / next image of the series"],
  ["G", "Outline the redacted regions"],
  ["F", "Full screen"],
  ["S", "Show / hide the side panel"],
  ["?", "This sheet"],
];

let started = null;
let counter = 0;

function webglWorks() {
  try {
    const canvas = document.createElement("canvas");
    return Boolean(canvas.getContext("webgl2"));
  } catch (e) {
    return false;
  }
}

function start() {
  if (!started) {
    started = (async () => {
      await coreInit();
      // No WebGL (a headless browser, a locked-down workstation): Cornerstone's CPU path.
      if (!webglWorks()) setUseCPURendering(true);
      toolsInit();
      [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, ...MEASURE].forEach((tool) =>
        addTool(tool)
      );
      registerLoader();
    })();
  }
  return started;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => {
    if (v === true) node.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v);
  });
  if (text) node.textContent = text;
  return node;
}

function button(label, attrs) {
  return el("button", { type: "button", class: "button button--quiet button--small", ...attrs }, label);
}

function fmt(n) {
  return Math.abs(n) >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10);
}

/* Builds the DOM around the existing viewer, then the Cornerstone viewport. Resolves to the
   adapter that viewer.js calls (setFrame, restore, showRedacted), or rejects (the plain
   <img> viewer then stays). */
export async function mountViewer(viewer) {
  const root = viewer.root;
  const id = ++counter;
  const doctor = root.hasAttribute("data-restore-url");
  // The image's API base from the viewer's source (/api/images/<id>/redacted/ or /grid/).
  const base = new URL(viewer.src, window.location.origin).pathname.replace(/[^/]+\/$/, "");
  const framesUrl = root.getAttribute("data-frames-url") || `${base}frames/`;
  // The de-identified DICOM (real values under the redaction) is the doctor's only.
  const exportUrl = doctor ? root.getAttribute("data-export-url") || `${base}export/` : null;
  let format = root.getAttribute("data-format") || "";

  // --- DOM ---------------------------------------------------------------------------------
  const shell = el("div", { class: "cs-viewer", "data-cs-viewer": true });
  const bar = el("div", { class: "cs-viewer__bar", role: "toolbar", "aria-label": "Viewer tools" });
  const toolButtons = {};
  const toolGroupEl = el("div", { class: "cs-viewer__group", role: "group", "aria-label": "Mouse tool" });
  TOOLS.forEach((t) => {
    const b = button(t.label, { "data-cs-tool": t.name, title: `${t.title} (${t.key.toUpperCase()})`, "aria-pressed": "false" });
    toolButtons[t.name] = b;
    toolGroupEl.append(b);
  });
  const viewGroup = el("div", { class: "cs-viewer__group", role: "group", "aria-label": "View" });
  const invertB = button("Invert", { "data-cs-action": "invert", title: "Invert (I)" });
  const rotateB = button("Rotate", { "data-cs-action": "rotate", title: "Rotate right (R)" });
  const flipB = button("Flip", { "data-cs-action": "flip", title: "Flip horizontally (H)" });
  const resetB = button("Reset", { "data-cs-action": "reset", title: "Reset (Space)" });
  const presetSelect = el("select", { "data-cs-preset": true, "aria-label": "Window preset" });
  viewGroup.append(invertB, rotateB, flipB, resetB, presetSelect);
  const cineGroup = el("div", { class: "cs-viewer__group", role: "group", "aria-label": "Cine" });
  const playB = button("Play", { "data-cs-action": "cine", title: "Play / stop (C)", "aria-pressed": "false" });
  const fpsLabel = el("label", { for: `cs-fps-${id}` }, "fps");
  const fps = el("input", { id: `cs-fps-${id}`, type: "number", min: "1", max: "60", value: "10", class: "cs-viewer__fps", "data-cs-fps": true });
  cineGroup.append(playB, fps, fpsLabel);
  const compareGroup = el("div", { class: "cs-viewer__group", role: "group", "aria-label": "Compare" });
  const compareSelect = el("select", { "data-cs-compare": true, "aria-label": "Compare original and redacted", disabled: true, title: "Restore the original first" });
  [["", "Single view"], ["side", "Side by side"], ["blink", "Blink"]].forEach(([v, l]) =>
    compareSelect.append(el("option", { value: v }, l))
  );
  compareGroup.append(compareSelect);
  const segGroup = el("div", { class: "cs-viewer__group", role: "group", "aria-label": "Segmentation", hidden: true });
  const segSelect = el("select", { "data-cs-seg": true, "aria-label": "Segmentation labelmap" });
  const opacityLabel = el("label", { for: `cs-opacity-${id}` }, "Opacity");
  const opacity = el("input", { id: `cs-opacity-${id}`, type: "range", min: "0", max: "100", value: "45", "data-cs-opacity": true, class: "cs-viewer__opacity" });
  segGroup.append(segSelect, opacityLabel, opacity);
  const frameGroup = el("div", { class: "cs-viewer__group", role: "group", "aria-label": "Images" });
  const prevB = button("‹ Frame", { "data-cs-action": "prev", title: "Previous frame (↑)" });
  const nextB = button("Frame ›", { "data-cs-action": "next", title: "Next frame (↓)" });
  const regionsB = button("Regions", { "data-cs-action": "regions", title: "Outline the redacted regions (G)", "aria-pressed": "false" });
  frameGroup.append(regionsB);
  const winGroup = el("div", { class: "cs-viewer__group cs-viewer__group--end", role: "group", "aria-label": "Window" });
  const panelB = button("Hide panel", { "data-cs-action": "panel", title: "Show / hide the side panel (S)", "aria-pressed": "false" });
  const fullB = button("Full screen", { "data-cs-action": "fullscreen", title: "Full screen (F)", "aria-pressed": "false" });
  const helpB = button("?", { "data-cs-action": "help", title: "Keyboard shortcuts (?)", "aria-label": "Keyboard shortcuts" });
  winGroup.append(panelB, fullB, helpB);
  bar.append(toolGroupEl, viewGroup);
  if (viewer.frames > 1) bar.append(cineGroup);
  if (doctor) bar.append(compareGroup, segGroup);
  bar.append(frameGroup, winGroup);

  const stage = el("div", {
    class: "cs-viewer__stage",
    tabindex: "0",
    role: "application",
    "aria-label": "Image. Left drag window/level, right drag zoom, middle drag pan, wheel frames; ? lists the keys.",
    "data-cs-stage": true,
  });
  const mainPane = el("div", { class: "cs-viewer__pane", "data-cs-pane": "main" });
  const mainEl = el("div", { class: "cs-viewer__element", "data-cs-element": "main" });
  const otherPane = el("div", { class: "cs-viewer__pane", "data-cs-pane": "other", hidden: true });
  const otherEl = el("div", { class: "cs-viewer__element", "data-cs-element": "other" });
  const corner = (pos) => el("div", { class: `cs-viewer__corner cs-viewer__corner--${pos}`, "data-cs-corner": pos });
  const corners = { tl: corner("tl"), tr: corner("tr"), bl: corner("bl"), br: corner("br") };
  const readout = el("span", { class: "mono", "data-wl-readout": true, "aria-live": "off" });
  corners.bl.append(readout);
  const otherLabel = el("div", { class: "cs-viewer__corner cs-viewer__corner--tl" });
  // The segmentation labelmap: each pixel's class in its colour, drawn in the image's own
  // coordinates under the viewport's current transform, so it follows zoom, pan, rotation,
  // flip and frame.
  const labelCanvas = el("canvas", { class: "cs-viewer__labelmap", "data-cs-labelmap": true, "aria-hidden": "true", hidden: true });
  const regionCanvas = el("canvas", { class: "cs-viewer__labelmap", "data-cs-regions": true, "aria-hidden": "true", hidden: true });
  mainPane.append(mainEl, labelCanvas, regionCanvas, corners.tl, corners.tr, corners.bl, corners.br);
  otherPane.append(otherEl, otherLabel);
  stage.append(mainPane, otherPane);

  const sheet = el("div", { class: "cs-viewer__sheet", role: "dialog", "aria-label": "Keyboard shortcuts", "data-cs-sheet": true, hidden: true });
  const table = el("table");
  SHORTCUTS.forEach(([k, what]) => {
    const tr = el("tr");
    tr.append(el("th", { scope: "row" }, k), el("td", {}, what));
    table.append(tr);
  });
  const closeSheet = button("Close", { "data-cs-action": "close-sheet" });
  sheet.append(el("h3", {}, "Keyboard and mouse"), table, closeSheet);

  const tagsBox = el("details", { class: "cs-viewer__tags", "data-cs-tags": true, hidden: true });
  const tagsFilter = el("input", { type: "search", placeholder: "Filter tags", "aria-label": "Filter tags" });
  const tagsTable = el("table", { class: "table" });
  tagsBox.append(el("summary", {}, "De-identified DICOM header"), tagsFilter, tagsTable);
  const status = el("p", { class: "cs-viewer__status", role: "status", "data-cs-status": true });

  // The series strip: the other images of this series, in instance order (links).
  const strip = el("nav", { class: "cs-viewer__strip", "aria-label": "Images in this series", "data-cs-strip": true, hidden: true });
  shell.append(bar, stage, strip, sheet, status, tagsBox);
  const oldViewport = root.querySelector("[data-viewport]");
  oldViewport.after(shell);
  shell.style.display = "none";

  // --- Cornerstone -------------------------------------------------------------------------
  await start();
  const engineId = `medimg-engine-${id}`;
  const engine = new RenderingEngine(engineId);
  const mainId = `main-${id}`;
  const otherId = `other-${id}`;
  root.classList.add("viewer--cs");
  root.setAttribute("data-cs-render", getShouldUseCPURendering() ? "cpu" : "webgl");
  shell.style.display = "";
  engine.enableElement({ viewportId: mainId, type: CoreEnums.ViewportType.STACK, element: mainEl, defaultOptions: { background: [0, 0, 0] } });
  const group = ToolGroupManager.createToolGroup(`medimg-tools-${id}`);
  [WindowLevelTool, PanTool, ZoomTool, StackScrollTool, ...MEASURE].forEach((t) => group.addTool(t.toolName));
  group.addViewport(mainId, engineId);
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  MEASURE.forEach((t) => group.setToolPassive(t.toolName));
  let primary = WindowLevelTool.toolName;
  const main = () => engine.getViewport(mainId);
  const other = () => engine.getViewport(otherId);

  function say(text) {
    status.textContent = text;
  }

  function selectTool(name) {
    if (name === primary) return;
    group.setToolPassive(primary);
    group.setToolActive(name, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    primary = name;
    Object.entries(toolButtons).forEach(([n, b]) => b.setAttribute("aria-pressed", String(n === name)));
  }
  toolButtons[primary].setAttribute("aria-pressed", "true");

  // --- Sources -------------------------------------------------------------------------------
  let info = null;
  let spacing = null; // [row, column] mm, from ultrasound regions for PNGs
  if (framesUrl) {
    try {
      const r = await fetch(framesUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (r.ok) info = await r.json();
    } catch (e) {
      info = null;
    }
  }
  if (info && info.format) format = info.format;
  if (info && info.ultrasound_regions) {
    const region = info.ultrasound_regions.find((u) => u.delta_x && u.delta_y && u.units_x === "cm");
    if (region) spacing = [region.delta_y * 10, region.delta_x * 10];
  }
  const presets = [];
  (info && info.window_presets ? info.window_presets : []).forEach((p) => {
    if (p.width) presets.push({ name: p.name, width: p.width, centre: p.centre });
  });
  (presets.length ? [] : OHIF_PRESETS).forEach((p) => presets.push(p));
  presetSelect.append(el("option", { value: "" }, "Window preset"));
  presets.forEach((p, i) =>
    presetSelect.append(el("option", { value: String(i) }, `${i < 9 ? i + 1 + " " : ""}${p.name} (W ${p.width} L ${p.centre})`))
  );

  const redactedUrl = (frame) => {
    const url = new URL(viewer.src, window.location.origin);
    if (viewer.frames > 1) url.searchParams.set("frame", String(frame));
    return url.pathname + url.search;
  };
  let redacted = null;
  if (exportUrl && format === "dicom") {
    try {
      const r = await fetch(exportUrl, { credentials: "same-origin" });
      document.dispatchEvent(new Event("medimg:server-activity"));
      if (r.ok) redacted = dicomSource(await r.arrayBuffer(), "Redacted");
    } catch (e) {
      redacted = null;
    }
  }
  if (!redacted) {
    redacted = pngSource(redactedUrl, viewer.frames, root.hasAttribute("data-no-window") ? "Redacted, numbered regions" : "Redacted", spacing);
  } else if (!redacted.spacing && spacing) {
    redacted.spacing = spacing;
  }
  if (redacted.kind === "dicom" && redacted.tags.length) showTags(redacted.tags);
  let original = null;
  let shown = redacted;

  function showTags(rows) {
    tagsBox.hidden = false;
    tagsTable.textContent = "";
    const head = el("tr");
    ["Tag", "Name", "Value"].forEach((h) => head.append(el("th", { scope: "col" }, h)));
    tagsTable.append(head);
    rows.forEach(([tag, name, value]) => {
      const tr = el("tr", { "data-tag": tag });
      tr.append(el("td", { class: "mono" }, tag), el("td", {}, name), el("td", { class: "mono" }, value));
      tagsTable.append(tr);
    });
  }
  tagsFilter.addEventListener("input", () => {
    const q = tagsFilter.value.toLowerCase();
    tagsTable.querySelectorAll("tr[data-tag]").forEach((tr) => {
      tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
    });
  });

  // --- Readouts ------------------------------------------------------------------------------
  function updateCorners() {
    const vp = main();
    if (!vp) return;
    const h = shown.header || {};
    corners.tl.textContent = [shown.label, h.modality, h.study, h.series].filter(Boolean).join(" · ");
    const index = vp.getCurrentImageIdIndex();
    corners.tr.textContent = `Im ${index + 1}/${shown.frames}`;
    const meta = shown.meta.get(index);
    let zoom = "";
    try {
      zoom = `Zoom ${Math.round(vp.getZoom() * 100)}%`;
    } catch (e) {
      zoom = "";
    }
    corners.br.textContent = [zoom, meta && meta.spacing ? `${fmt(meta.spacing[1])}×${fmt(meta.spacing[0])} mm/px` : "no pixel spacing: px", h.sliceThickness ? `ST ${h.sliceThickness} mm` : ""].filter(Boolean).join(" · ");
    const voi = vp.getProperties().voiRange;
    if (voi) {
      const { windowWidth, windowCenter } = coreUtils.windowLevel.toWindowLevel(voi.lower, voi.upper);
      readout.textContent = `W ${fmt(windowWidth)} L ${fmt(windowCenter)}${h.modality === "CT" && shown.kind === "dicom" ? " HU" : ""}`;
      readout.setAttribute("data-ww", String(windowWidth));
      readout.setAttribute("data-wc", String(windowCenter));
    }
    if (viewer.level) viewer.level.textContent = zoom.replace("Zoom ", "") || viewer.level.textContent;
  }
  mainEl.addEventListener(CoreEnums.Events.VOI_MODIFIED, updateCorners);
  mainEl.addEventListener(CoreEnums.Events.CAMERA_MODIFIED, updateCorners);
  mainEl.addEventListener(CoreEnums.Events.IMAGE_RENDERED, () => {
    updateCorners();
    drawLabels();
    drawRegions();
  });
  mainEl.addEventListener(CoreEnums.Events.STACK_NEW_IMAGE, (event) => {
    const index = event.detail.imageIdIndex;
    if (typeof viewer.frameShown === "function") viewer.frameShown(index);
    const o = other();
    if (o && !otherPane.hidden && o.getCurrentImageIdIndex() !== index) o.setImageIdIndex(index);
  });

  async function show(source) {
    const vp = main();
    const index = Math.min(viewer.frame || 0, source.frames - 1);
    shown = source;
    await vp.setStack(source.imageIds, index);
    vp.render();
    root.setAttribute("data-cs-source", source === original ? "original" : "redacted");
    updateCorners();
  }

  // --- Segmentation labelmap ----------------------------------------------------------------
  let seg = null; // { job, frames: Map(frame -> Promise<canvas>) }
  const segUrlBase = base.replace(/images\/\d+\/$/, "segmentations/");
  async function listSegmentations() {
    if (!doctor) return;
    try {
      const r = await fetch(`${base}segmentations/`, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) return;
      const jobs = (await r.json()).filter((j) => j.status === "completed");
      const chosen = segSelect.value;
      segSelect.textContent = "";
      segSelect.append(el("option", { value: "" }, "No labelmap"));
      jobs.forEach((j) => segSelect.append(el("option", { value: String(j.id) }, `Labelmap: ${j.model} #${j.id}`)));
      segSelect.value = chosen;
      segGroup.hidden = jobs.length === 0;
      segSelect._jobs = jobs;
    } catch (e) {
      /* no list: no labelmap control */
    }
  }
  function hexColour(value) {
    if (Array.isArray(value)) return value;
    const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(value || "");
    return m ? [parseInt(m[1], 16), parseInt(m[2], 16), parseInt(m[3], 16)] : [255, 0, 255];
  }
  function labelFrame(frame) {
    if (!seg.frames.has(frame)) {
      const url = `${segUrlBase}${seg.job.id}/overlay/?labels=true&frame=${frame}`;
      seg.frames.set(
        frame,
        (async () => {
          const r = await fetch(url, { credentials: "same-origin" });
          document.dispatchEvent(new Event("medimg:server-activity"));
          if (!r.ok) throw new Error(`The labelmap could not be loaded (HTTP ${r.status}).`);
          const bitmap = await createImageBitmap(await r.blob());
          const canvas = document.createElement("canvas");
          canvas.width = bitmap.width;
          canvas.height = bitmap.height;
          const ctx = canvas.getContext("2d", { willReadFrequently: true });
          ctx.drawImage(bitmap, 0, 0);
          const img = ctx.getImageData(0, 0, canvas.width, canvas.height);
          const colours = {};
          Object.entries((seg.job.results || {}).colours || {}).forEach(([k, v]) => {
            colours[k] = hexColour(v);
          });
          const d = img.data;
          for (let i = 0; i < d.length; i += 4) {
            const label = d[i];
            if (label === 0) {
              d[i + 3] = 0;
            } else {
              const c = colours[String(label)] || [255, 0, 255];
              d[i] = c[0];
              d[i + 1] = c[1];
              d[i + 2] = c[2];
              d[i + 3] = 255;
            }
          }
          ctx.putImageData(img, 0, 0);
          return canvas;
        })()
      );
    }
    return seg.frames.get(frame);
  }
  // Image pixel (x, y) of the image on screen to canvas (CSS) pixels of the main element.
  function toCanvas(vp, x, y) {
    return vp.worldToCanvas(coreUtils.imageToWorldCoords(vp.getCurrentImageId(), [x, y]));
  }
  function fitCanvas(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const cw = Math.round(mainEl.clientWidth * ratio);
    const chh = Math.round(mainEl.clientHeight * ratio);
    if (canvas.width !== cw || canvas.height !== chh) {
      canvas.width = cw;
      canvas.height = chh;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    return { ctx, ratio };
  }

  // --- Region outlines (what was redacted), on the redacted and the original alike ----------
  let regions = [];
  let showRegions = false;
  function drawRegions() {
    const vp = main();
    if (!vp || !showRegions || !regions.length) {
      regionCanvas.hidden = true;
      return;
    }
    const frame = vp.getCurrentImageIdIndex();
    const { ctx, ratio } = fitCanvas(regionCanvas);
    ctx.lineWidth = 2 * ratio;
    ctx.font = `${12 * ratio}px ui-monospace, monospace`;
    let drawn = 0;
    regions
      .filter((r) => r.frame === frame || (r.frame == null && frame === 0))
      .forEach((r) => {
        const [x1, y1, x2, y2] = r.box;
        const pts = [toCanvas(vp, x1, y1), toCanvas(vp, x2, y1), toCanvas(vp, x2, y2), toCanvas(vp, x1, y2)];
        ctx.strokeStyle = r.removal_pending ? "#ffbf47" : "#00e5ff";
        ctx.beginPath();
        pts.forEach((p, i) => (i ? ctx.lineTo(p[0] * ratio, p[1] * ratio) : ctx.moveTo(p[0] * ratio, p[1] * ratio)));
        ctx.closePath();
        ctx.stroke();
        ctx.fillStyle = ctx.strokeStyle;
        ctx.fillText(String(r.index + 1), pts[0][0] * ratio + 3 * ratio, pts[0][1] * ratio + 13 * ratio);
        drawn++;
      });
    regionCanvas.hidden = false;
    regionCanvas.setAttribute("data-count", String(drawn));
  }
  function toggleRegions() {
    showRegions = !showRegions;
    regionsB.setAttribute("aria-pressed", String(showRegions));
    drawRegions();
  }

  // --- The series: neighbours and a strip of links ------------------------------------------
  async function loadSeries(detail) {
    if (!detail || !detail.patient) return;
    try {
      const r = await fetch(`/api/patients/${encodeURIComponent(detail.patient)}/studies/`, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!r.ok) return;
      const scanId = detail.id;
      let series = null;
      (await r.json()).forEach((study) =>
        study.series.forEach((se) => {
          if (se.scans.some((sc) => sc.id === scanId)) series = se;
        })
      );
      if (!series || series.scans.length < 2) return;
      strip.textContent = "";
      const scans = series.scans;
      const at = scans.findIndex((sc) => sc.id === scanId);
      const link = (sc, text, rel) =>
        el("a", { href: `/scans/${sc.id}/`, class: "button button--quiet button--small", rel, "data-cs-series-link": rel || "image" }, text);
      if (at > 0) strip.append(link(scans[at - 1], "‹ Previous image", "prev"));
      scans.forEach((sc, i) => {
        const item = el("a", { href: `/scans/${sc.id}/`, class: "cs-viewer__thumb", "aria-current": i === at ? "page" : null, title: sc.original_filename });
        item.append(el("span", { class: "mono" }, `${sc.instance_number ?? i + 1}`), el("span", {}, ` ${sc.modality || ""} ${sc.frames > 1 ? sc.frames + " fr" : ""}`));
        strip.append(item);
      });
      if (at < scans.length - 1) strip.append(link(scans[at + 1], "Next image ›", "next"));
      strip.hidden = false;
      seriesNav.prev = at > 0 ? `/scans/${scans[at - 1].id}/` : null;
      seriesNav.next = at < scans.length - 1 ? `/scans/${scans[at + 1].id}/` : null;
    } catch (e) {
      /* no strip */
    }
  }
  const seriesNav = { prev: null, next: null };

  let drawToken = 0;
  async function drawLabels() {
    const token = ++drawToken;
    const vp = main();
    if (!seg || !vp) {
      labelCanvas.hidden = true;
      return;
    }
    const frame = vp.getCurrentImageIdIndex();
    let source;
    try {
      source = await labelFrame(frame);
    } catch (e) {
      say(e.message);
      return;
    }
    if (token !== drawToken || !seg) return;
    const w = source.width;
    const h = source.height;
    const p0 = toCanvas(vp, 0, 0);
    const p1 = toCanvas(vp, w, 0);
    const p2 = toCanvas(vp, 0, h);
    const { ctx, ratio } = fitCanvas(labelCanvas);
    const t = [(p1[0] - p0[0]) / w, (p1[1] - p0[1]) / w, (p2[0] - p0[0]) / h, (p2[1] - p0[1]) / h, p0[0], p0[1]];
    ctx.setTransform(t[0] * ratio, t[1] * ratio, t[2] * ratio, t[3] * ratio, t[4] * ratio, t[5] * ratio);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = Number(opacity.value) / 100;
    ctx.drawImage(source, 0, 0);
    labelCanvas.hidden = false;
    labelCanvas.setAttribute("data-transform", t.map((v) => v.toFixed(3)).join(","));
    labelCanvas.setAttribute("data-frame", String(frame));
  }
  segSelect.addEventListener("focus", listSegmentations);
  segSelect.addEventListener("change", () => {
    const job = (segSelect._jobs || []).find((j) => String(j.id) === segSelect.value);
    seg = job ? { job, frames: new Map() } : null;
    root.toggleAttribute("data-labelmap", Boolean(seg));
    drawLabels();
  });
  opacity.addEventListener("input", drawLabels);
  // A segmentation finished in the panel beside (static/js/segmentation.js): list it.
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest("[data-segmentation]")) window.setTimeout(listSegmentations, 3000);
  });

  // --- Compare (original beside or blinking with the redacted) -------------------------------
  let blinkTimer = null;
  let cameraSync = null;
  let voiSync = null;
  async function compare(mode) {
    window.clearInterval(blinkTimer);
    blinkTimer = null;
    mainPane.hidden = false;
    stage.classList.remove("cs-viewer__stage--side", "cs-viewer__stage--blink");
    if (!mode || !original) {
      otherPane.hidden = true;
      if (engine.getViewport(otherId)) engine.disableElement(otherId);
      engine.resize(true, true);
      return;
    }
    otherPane.hidden = false;
    stage.classList.add(mode === "side" ? "cs-viewer__stage--side" : "cs-viewer__stage--blink");
    if (!engine.getViewport(otherId)) {
      engine.enableElement({ viewportId: otherId, type: CoreEnums.ViewportType.STACK, element: otherEl, defaultOptions: { background: [0, 0, 0] } });
      group.addViewport(otherId, engineId);
      if (!cameraSync) {
        // Zoom and pan relative to each viewport's fit (the panes differ in size), and the
        // same window on both.
        cameraSync = synchronizers.createZoomPanSynchronizer(`medimg-cam-${id}`);
        voiSync = synchronizers.createVOISynchronizer(`medimg-voi-${id}`);
      }
      [cameraSync, voiSync].forEach((s) => {
        s.add({ renderingEngineId: engineId, viewportId: mainId });
        s.add({ renderingEngineId: engineId, viewportId: otherId });
      });
    }
    engine.resize(true, true);
    const counterpart = shown === original ? redacted : original;
    otherLabel.textContent = counterpart.label;
    await other().setStack(counterpart.imageIds, main().getCurrentImageIdIndex());
    other().resetCamera();
    main().resetCamera();
    other().setProperties({ voiRange: main().getProperties().voiRange });
    other().render();
    main().render();
    if (mode === "blink") {
      let showMain = true;
      blinkTimer = window.setInterval(() => {
        showMain = !showMain;
        mainPane.hidden = !showMain;
        otherPane.hidden = showMain;
      }, 700);
    }
  }
  compareSelect.addEventListener("change", () => compare(compareSelect.value));

  // --- Actions -------------------------------------------------------------------------------
  let rotation = 0;
  let flipH = false;
  let flipV = false;
  let playing = false;

  function setPresentation() {
    const vp = main();
    vp.setViewPresentation({ rotation, flipHorizontal: flipH, flipVertical: flipV });
    vp.render();
  }
  function applyPreset(i) {
    const p = presets[i];
    if (!p) return;
    const vp = main();
    vp.setProperties({ voiRange: coreUtils.windowLevel.toLowHighRange(p.width, p.centre) });
    vp.render();
    say(`Window: ${p.name}.`);
  }
  function zoomBy(factor) {
    const vp = main();
    vp.setZoom(vp.getZoom() * factor);
    vp.render();
  }
  function setFrame(index) {
    const vp = main();
    const next = Math.max(0, Math.min(shown.frames - 1, index));
    if (vp.getCurrentImageIdIndex() !== next) vp.setImageIdIndex(next);
  }
  function cine(on) {
    if (viewer.frames < 2) return;
    playing = on;
    if (on) toolUtils.cine.playClip(mainEl, { framesPerSecond: Number(fps.value) || 10, loop: true });
    else toolUtils.cine.stopClip(mainEl);
    playB.textContent = on ? "Stop" : "Play";
    playB.setAttribute("aria-pressed", String(on));
    root.toggleAttribute("data-cine", on);
  }
  fps.addEventListener("change", () => {
    if (playing) cine(true);
  });
  function togglePanel() {
    const layout = root.closest(".layout");
    if (!layout) return;
    const hidden = layout.classList.toggle("layout--aside-hidden");
    panelB.textContent = hidden ? "Show panel" : "Hide panel";
    panelB.setAttribute("aria-pressed", String(hidden));
    window.setTimeout(() => engine.resize(true, true), 0);
  }
  function toggleFullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else root.requestFullscreen().catch((e) => say(`Full screen is not available here: ${e.message}`));
  }
  document.addEventListener("fullscreenchange", () => {
    const on = document.fullscreenElement === root;
    fullB.textContent = on ? "Exit full screen" : "Full screen";
    fullB.setAttribute("aria-pressed", String(on));
    window.requestAnimationFrame(() => engine.resize(true, true));
  });
  function toggleSheet(open) {
    sheet.hidden = open === undefined ? !sheet.hidden : !open;
    if (!sheet.hidden) closeSheet.focus();
    else stage.focus();
  }
  function reset() {
    rotation = 0;
    flipH = flipV = false;
    const vp = main();
    vp.resetCamera();
    vp.resetProperties();
    setPresentation();
    updateCorners();
  }
  const actions = {
    invert: () => {
      const vp = main();
      vp.setProperties({ invert: !vp.getProperties().invert });
      vp.render();
    },
    rotate: () => {
      rotation = (rotation + 90) % 360;
      setPresentation();
    },
    rotateLeft: () => {
      rotation = (rotation + 270) % 360;
      setPresentation();
    },
    flip: () => {
      flipH = !flipH;
      setPresentation();
    },
    flipV: () => {
      flipV = !flipV;
      setPresentation();
    },
    reset,
    cine: () => cine(!playing),
    prev: () => setFrame(main().getCurrentImageIdIndex() - 1),
    next: () => setFrame(main().getCurrentImageIdIndex() + 1),
    panel: togglePanel,
    regions: toggleRegions,
    fullscreen: toggleFullscreen,
    help: () => toggleSheet(),
    "close-sheet": () => toggleSheet(false),
  };
  shell.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.hasAttribute("data-cs-tool")) selectTool(target.getAttribute("data-cs-tool"));
    const action = target.getAttribute("data-cs-action");
    if (action && actions[action]) actions[action]();
  });
  presetSelect.addEventListener("change", () => {
    if (presetSelect.value !== "") applyPreset(Number(presetSelect.value));
  });

  const keys = {
    i: actions.invert,
    r: actions.rotate,
    l: actions.rotateLeft,
    h: actions.flip,
    v: actions.flipV,
    " ": reset,
    "+": () => zoomBy(1.25),
    "=": () => zoomBy(1.25),
    "-": () => zoomBy(0.8),
    ArrowDown: actions.next,
    ArrowUp: actions.prev,
    PageDown: actions.next,
    PageUp: actions.prev,
    c: actions.cine,
    g: toggleRegions,
    ".": () => seriesNav.next && window.location.assign(seriesNav.next),
    ",": () => seriesNav.prev && window.location.assign(seriesNav.prev),
    f: toggleFullscreen,
    s: togglePanel,
    "?": () => toggleSheet(),
    Escape: () => toggleSheet(false),
  };
  TOOLS.forEach((t) => {
    keys[t.key] = () => selectTool(t.name);
  });
  shell.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.matches("input, select, textarea")) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (/^[1-9]$/.test(key)) {
      applyPreset(Number(key) - 1);
      event.preventDefault();
      return;
    }
    const fn = keys[key];
    if (fn) {
      fn();
      event.preventDefault();
    }
  });
  // Mouse and keys in the viewer count as activity for the idle sign-out without anything
  // here: static/js/session.js listens on the document in the capture phase.
  new ResizeObserver(() => engine.resize(true, true)).observe(stage);

  await show(redacted);
  say("");
  listSegmentations();
  // The scan's detail: its regions (outlines) and its patient (the series strip).
  fetch(base, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then((r) => (r.ok ? r.json() : null))
    .then((detail) => {
      if (!detail) return;
      regions = detail.regions || [];
      // The doctor sees what was redacted outlined by default; the grid image has its own.
      if (doctor && regions.length) toggleRegions();
      if (!regions.length) regionsB.disabled = true;
      loadSeries(detail);
    })
    .catch(() => {});
  const help = root.querySelector("#viewer-help");
  if (help) {
    help.textContent =
      "Left drag: window/level (or the selected tool); right drag: zoom; middle drag: pan; " +
      "wheel or ↑ ↓: frames; 1–5: window presets; ? lists every key." +
      (doctor ? " Restoring or downloading the original is recorded in the audit log." : "");
  }

  // --- The adapter viewer.js calls ----------------------------------------------------------
  const adapter = {
    engine,
    get source() {
      return shown === original ? "original" : "redacted";
    },
    setFrame,
    frame: () => main().getCurrentImageIdIndex(),
    presets,
    applyPreset,
    /* The stored values of a box of the image on screen as RGB triples (grey repeated), as
       they reached Cornerstone: what the browser tests compare with the uploaded pixels. */
    readPixels(x, y, w, h) {
      const image = main().getCornerstoneImage();
      const data = image.getPixelData();
      const n = image.numberOfComponents || (image.color ? 3 : 1);
      const out = [];
      for (let row = y; row < y + h; row++) {
        for (let col = x; col < x + w; col++) {
          const i = (row * image.columns + col) * n;
          if (n >= 3) out.push(data[i], data[i + 1], data[i + 2]);
          else out.push(data[i], data[i], data[i]);
        }
      }
      return out;
    },
    /* The modality value (stored × slope + intercept: HU on CT) at a pixel of the image. */
    valueAt(x, y) {
      const image = main().getCornerstoneImage();
      const value = image.getPixelData()[y * image.columns + x];
      const scaling = (image.preScale && image.preScale.scaled && image.preScale.scalingParameters) || {};
      const slope = scaling.rescaleSlope ?? 1;
      const intercept = scaling.rescaleIntercept ?? 0;
      return { stored: (value - intercept) / slope, value, width: image.columns, height: image.rows };
    },
    measurements: () =>
      annotation.state.getAllAnnotations().map((a) => ({
        tool: a.metadata.toolName,
        stats: a.data.cachedStats,
      })),
    /* The original: one sealed restore as DICOM (all frames, real values) when the file is a
       DICOM whose pixels read without a codec; otherwise the PNG of each frame, restored as
       it is shown. `fetchOriginal(fields)` resolves to a Blob. */
    async restore(fetchOriginal, reason) {
      const base = reason ? { reason } : {};
      let source = null;
      if (format === "dicom") {
        const blob = await fetchOriginal({ ...base, format: "dicom" });
        source = dicomSource(await blob.arrayBuffer(), "Original (restored)");
      }
      if (!source) {
        source = pngSource((frame) => fetchOriginal({ ...base, format: "png", ...(viewer.frames > 1 ? { frame } : {}) }), viewer.frames, "Original (restored)", spacing);
      } else if (!source.spacing && spacing) {
        source.spacing = spacing;
      }
      dropSource(original);
      original = source;
      await show(original);
      compareSelect.disabled = false;
      compareSelect.removeAttribute("title");
      if (compareSelect.value) await compare(compareSelect.value);
      return original.kind;
    },
    async showRedacted() {
      await show(redacted);
      if (compareSelect.value) await compare(compareSelect.value);
    },
    forget() {
      // The restored pixels do not outlive the page (pagehide).
      compare("");
      dropSource(original);
      original = null;
    },
  };
  viewer.cs = adapter;
  root.setAttribute("data-cs-ready", "");
  return adapter;
}

export { getRenderingEngine };
