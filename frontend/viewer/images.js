/* The `medimg:` image loader and its metadata. Every image the viewer shows is one frame of a
   "source": a parsed DICOM, or a list of PNG URLs (one per frame). imageIds are
   medimg:<source id>:<frame>. */
import { metaData, registerImageLoader, utilities } from "@cornerstonejs/core";
import dicomParser from "dicom-parser";

const sources = new Map();
let nextSource = 1;

// Transfer syntaxes read here without a codec; anything else falls back to the PNG.
const NATIVE = new Set(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]);

function numbers(text) {
  if (!text) return null;
  const parts = String(text)
    .split("\\")
    .map(Number)
    .filter((n) => Number.isFinite(n));
  return parts.length ? parts : null;
}

/* A DICOM file (ArrayBuffer) as a source, or null when its pixels need a codec. */
export function dicomSource(buffer, label) {
  const bytes = new Uint8Array(buffer);
  const ds = dicomParser.parseDicom(bytes);
  const syntax = (ds.string("x00020010") || "1.2.840.10008.1.2.1").trim();
  const pixel = ds.elements.x7fe00010;
  if (!NATIVE.has(syntax) || !pixel || pixel.encapsulatedPixelData) {
    return null;
  }
  const rows = ds.uint16("x00280010");
  const columns = ds.uint16("x00280011");
  const samples = ds.uint16("x00280002") || 1;
  const bits = ds.uint16("x00280100") || 16;
  const signed = ds.uint16("x00280103") === 1;
  const frames = parseInt(ds.string("x00280008") || "1", 10) || 1;
  const photometric = (ds.string("x00280004") || "MONOCHROME2").trim();
  const planar = ds.uint16("x00280006") || 0;
  const spacing =
    numbers(ds.string("x00280030")) || numbers(ds.string("x00181164")) || null; // row\col
  const tags = readTags(ds);
  const header = {
    modality: (ds.string("x00080060") || "").trim(),
    slope: ds.floatString("x00281053") ?? 1,
    intercept: ds.floatString("x00281052") ?? 0,
    windowCenter: numbers(ds.string("x00281050")),
    windowWidth: numbers(ds.string("x00281051")),
    study: (ds.string("x00081030") || "").trim(),
    series: (ds.string("x0008103e") || "").trim(),
    date: (ds.string("x00080020") || "").trim(),
    institution: (ds.string("x00080080") || "").trim(),
    sliceThickness: ds.floatString("x00180050"),
  };
  const frameBytes = rows * columns * samples * (bits / 8);
  const readFrame = (index) => {
    const start = pixel.dataOffset + index * frameBytes;
    const raw = bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + frameBytes);
    if (samples === 3) {
      const rgb = new Uint8Array(raw);
      if (planar === 1) {
        const out = new Uint8Array(rgb.length);
        const n = rows * columns;
        for (let i = 0; i < n; i++) {
          out[3 * i] = rgb[i];
          out[3 * i + 1] = rgb[n + i];
          out[3 * i + 2] = rgb[2 * n + i];
        }
        return out;
      }
      return rgb;
    }
    if (bits === 8) return new Uint8Array(raw);
    return signed ? new Int16Array(raw) : new Uint16Array(raw);
  };
  return addSource({
    kind: "dicom",
    label,
    frames,
    rows,
    columns,
    samples,
    photometric,
    spacing,
    header,
    tags,
    readFrame,
  });
}

/* PNG frames fetched one by one (`urlFor(frame)` gives a URL or a Promise of a Blob). */
export function pngSource(urlFor, frames, label, spacing) {
  return addSource({ kind: "png", label, frames, spacing: spacing || null, urlFor, tags: [] });
}

function addSource(source) {
  const id = nextSource++;
  source.id = id;
  source.imageIds = Array.from({ length: source.frames }, (_, i) => `medimg:${id}:${i}`);
  source.meta = new Map();
  sources.set(id, source);
  return source;
}

export function dropSource(source) {
  if (source) sources.delete(source.id);
}

function parseId(imageId) {
  const [, id, frame] = imageId.split(":");
  return { source: sources.get(Number(id)), frame: Number(frame) };
}

async function pngPixels(source, frame) {
  const target = await source.urlFor(frame);
  let blob = target;
  if (typeof target === "string") {
    const response = await fetch(target, { credentials: "same-origin" });
    document.dispatchEvent(new Event("medimg:server-activity"));
    if (!response.ok) throw new Error(`The image could not be loaded (HTTP ${response.status}).`);
    blob = await response.blob();
  }
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const n = bitmap.width * bitmap.height;
  let grey = true;
  for (let i = 0; i < n && grey; i++) {
    const r = rgba[4 * i];
    grey = r === rgba[4 * i + 1] && r === rgba[4 * i + 2];
  }
  let data;
  if (grey) {
    data = new Uint8Array(n);
    for (let i = 0; i < n; i++) data[i] = rgba[4 * i];
  } else {
    data = new Uint8Array(3 * n);
    for (let i = 0; i < n; i++) {
      data[3 * i] = rgba[4 * i];
      data[3 * i + 1] = rgba[4 * i + 1];
      data[3 * i + 2] = rgba[4 * i + 2];
    }
  }
  return { data, rows: bitmap.height, columns: bitmap.width, samples: grey ? 1 : 3 };
}

function minMax(data) {
  let min = data[0];
  let max = data[0];
  for (let i = 1; i < data.length; i++) {
    const v = data[i];
    if (v < min) min = v;
    else if (v > max) max = v;
  }
  return [min, max];
}

async function loadFrame(imageId) {
  const { source, frame } = parseId(imageId);
  if (!source) throw new Error(`Unknown image ${imageId}`);
  let px;
  if (source.kind === "dicom") {
    px = {
      data: source.readFrame(frame),
      rows: source.rows,
      columns: source.columns,
      samples: source.samples,
    };
  } else {
    px = await pngPixels(source, frame);
  }
  const colour = px.samples === 3;
  const header = source.header || {};
  const slope = colour ? 1 : header.slope ?? 1;
  const intercept = colour ? 0 : header.intercept ?? 0;
  // Pre-scaled to modality values (HU on CT), as Cornerstone's own DICOM loader does: the
  // tools (probe, ROI statistics) read the pixel data as modality values.
  const scaled = slope !== 1 || intercept !== 0;
  if (scaled) {
    const integral = Number.isInteger(slope) && Number.isInteger(intercept);
    const [lo, hi] = minMax(px.data);
    const ends = [lo * slope + intercept, hi * slope + intercept];
    const fits = integral && Math.min(...ends) >= -32768 && Math.max(...ends) <= 32767;
    const out = fits ? new Int16Array(px.data.length) : new Float32Array(px.data.length);
    for (let i = 0; i < px.data.length; i++) out[i] = px.data[i] * slope + intercept;
    px.data = out;
  }
  const [min, max] = minMax(px.data);
  let wc = header.windowCenter ? header.windowCenter[0] : null;
  let ww = header.windowWidth ? header.windowWidth[0] : null;
  if (!(ww > 0)) {
    // No window in the file: the full range of the values.
    ww = Math.max(1, max - min);
    wc = min + ww / 2;
  }
  const spacing = source.spacing; // [row, column] in mm, or null
  const meta = {
    rows: px.rows,
    columns: px.columns,
    samples: px.samples,
    photometric: colour ? "RGB" : source.photometric || "MONOCHROME2",
    bits: px.data.BYTES_PER_ELEMENT * 8,
    signed: px.data instanceof Int16Array || px.data instanceof Float32Array,
    spacing,
    slope,
    intercept,
    wc,
    ww,
    modality: header.modality || "OT",
  };
  source.meta.set(frame, meta);
  const voxelManager = utilities.VoxelManager.createImageVoxelManager({
    width: px.columns,
    height: px.rows,
    numberOfComponents: px.samples,
    scalarData: px.data,
    id: imageId,
  });
  // The probe asks a frame's voxels at k = the frame's index in the stack; one image holds
  // one frame.
  const getAt = voxelManager.getAtIJKPoint.bind(voxelManager);
  voxelManager.getAtIJKPoint = (ijk) => getAt([ijk[0], ijk[1], 0]);
  return {
    imageId,
    minPixelValue: min,
    maxPixelValue: max,
    slope: 1,
    intercept: 0,
    isPreScaled: scaled,
    preScale: {
      enabled: scaled,
      scaled,
      scalingParameters: { modality: header.modality, rescaleSlope: slope, rescaleIntercept: intercept },
    },
    windowCenter: wc,
    windowWidth: ww,
    voiLUTFunction: "LINEAR",
    getPixelData: () => voxelManager.getScalarData(),
    getCanvas: undefined,
    rows: px.rows,
    columns: px.columns,
    height: px.rows,
    width: px.columns,
    color: colour,
    rgba: false,
    numberOfComponents: px.samples,
    columnPixelSpacing: spacing ? spacing[1] : 1,
    rowPixelSpacing: spacing ? spacing[0] : 1,
    invert: meta.photometric === "MONOCHROME1",
    photometricInterpretation: meta.photometric,
    sizeInBytes: px.data.byteLength,
    voxelManager,
    dataType: px.data.constructor.name,
  };
}

function provider(type, imageId) {
  if (typeof imageId !== "string" || !imageId.startsWith("medimg:")) return undefined;
  const { source, frame } = parseId(imageId);
  const meta = source && source.meta.get(frame);
  if (!meta) return undefined;
  const spacing = meta.spacing;
  switch (type) {
    case "imagePlaneModule":
      return {
        frameOfReferenceUID: `medimg-${source.id}`,
        rows: meta.rows,
        columns: meta.columns,
        imageOrientationPatient: [1, 0, 0, 0, 1, 0],
        rowCosines: [1, 0, 0],
        columnCosines: [0, 1, 0],
        imagePositionPatient: [0, 0, frame],
        pixelSpacing: spacing || undefined,
        rowPixelSpacing: spacing ? spacing[0] : null,
        columnPixelSpacing: spacing ? spacing[1] : null,
        sliceThickness: 1,
        usingDefaultValues: !spacing,
      };
    case "imagePixelModule":
      return {
        samplesPerPixel: meta.samples,
        photometricInterpretation: meta.photometric,
        rows: meta.rows,
        columns: meta.columns,
        bitsAllocated: meta.bits,
        bitsStored: meta.bits,
        highBit: meta.bits - 1,
        pixelRepresentation: meta.signed ? 1 : 0,
        planarConfiguration: 0,
      };
    case "modalityLutModule":
      return { rescaleSlope: meta.slope, rescaleIntercept: meta.intercept };
    case "voiLutModule":
      return { windowCenter: [meta.wc], windowWidth: [meta.ww] };
    case "generalSeriesModule":
      return { modality: meta.modality };
    case "calibratedPixelSpacing":
    case "imagePlaneModuleCalibration":
      return undefined;
    default:
      return undefined;
  }
}

let registered = false;
export function registerLoader() {
  if (registered) return;
  registered = true;
  registerImageLoader("medimg", (imageId) => ({ promise: loadFrame(imageId) }));
  metaData.addProvider(provider, 10000);
}

/* The de-identified header as [tag, name, value] rows (the tag browser). */
const NAMES = {
  x00080008: "Image Type",
  x00080016: "SOP Class UID",
  x00080018: "SOP Instance UID",
  x00080020: "Study Date",
  x00080060: "Modality",
  x00080070: "Manufacturer",
  x00080080: "Institution Name",
  x00081030: "Study Description",
  x0008103e: "Series Description",
  x00100010: "Patient's Name",
  x00100020: "Patient ID",
  x00100030: "Patient's Birth Date",
  x00100040: "Patient's Sex",
  x00101010: "Patient's Age",
  x00120062: "Patient Identity Removed",
  x00120063: "De-identification Method",
  x00180050: "Slice Thickness",
  x00181164: "Imager Pixel Spacing",
  x0020000d: "Study Instance UID",
  x0020000e: "Series Instance UID",
  x00200013: "Instance Number",
  x00280002: "Samples per Pixel",
  x00280004: "Photometric Interpretation",
  x00280008: "Number of Frames",
  x00280010: "Rows",
  x00280011: "Columns",
  x00280030: "Pixel Spacing",
  x00280100: "Bits Allocated",
  x00280101: "Bits Stored",
  x00281050: "Window Center",
  x00281051: "Window Width",
  x00281052: "Rescale Intercept",
  x00281053: "Rescale Slope",
};

function readTags(ds) {
  const rows = [];
  for (const key of Object.keys(ds.elements).sort()) {
    const el = ds.elements[key];
    if (key === "x7fe00010" || el.items || key.startsWith("x0002")) continue;
    const tag = `(${key.slice(1, 5)},${key.slice(5)})`.toUpperCase();
    const vr = el.vr;
    let value;
    if (vr && ["US", "SS", "UL", "SL", "FL", "FD"].includes(vr)) {
      const read = { US: "uint16", SS: "int16", UL: "uint32", SL: "int32", FL: "float", FD: "double" }[vr];
      try {
        value = String(ds[read](key));
      } catch (e) {
        value = "";
      }
    } else if (vr && ["OB", "OW", "OF", "UN", "SQ"].includes(vr)) {
      value = `(${el.length} bytes)`;
    } else if (el.length > 256) {
      value = `(${el.length} bytes)`;
    } else {
      value = ds.string(key) || "";
    }
    rows.push([tag, NAMES[key] || "", value]);
  }
  return rows;
}
