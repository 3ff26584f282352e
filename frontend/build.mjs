// Bundles frontend/viewer/ (Cornerstone3D and the app's glue) into static/vendor/viewer/viewer.js
// and frontend/brain3d/ (NiiVue and the 3D page's glue) into static/vendor/brain3d/brain3d.js:
// one IIFE file each, no CDN, no web workers, served by Django's static files like the rest.
import { build } from "esbuild";
import { mkdir, readFile, writeFile } from "node:fs/promises";

// vtk.js's XML writer (never used by a stack viewport) asks for Node's "url" and "events".
const nodeShims = {
  name: "node-shims",
  setup(b) {
    b.onResolve({ filter: /^(url|events)$/ }, (args) => ({ path: args.path, namespace: "shim" }));
    b.onLoad({ filter: /^events$/, namespace: "shim" }, () => ({
      contents:
        "class EventEmitter { on() { return this; } once() { return this; } off() { return this; }" +
        " removeListener() { return this; } emit() { return false; } }" +
        " module.exports = EventEmitter; module.exports.EventEmitter = EventEmitter;",
    }));
    b.onLoad({ filter: /^url$/, namespace: "shim" }, () => ({
      contents: "module.exports = { URL: globalThis.URL, URLSearchParams: globalThis.URLSearchParams };",
    }));
  },
};

// The site's Content-Security-Policy has style-src 'self': a style *attribute* set with
// setAttribute is refused, the same style through the CSSOM is not. Cornerstone's SVG text
// (measurement labels) is the one place that sets one.
const cspStyles = {
  name: "csp-styles",
  setup(b) {
    b.onLoad({ filter: /drawingSvg[\\/]drawTextBox\.js$/ }, async (args) => {
      const source = await readFile(args.path, "utf8");
      const patched = source.replace(
        "textElement.setAttribute('style', combinedStyle);",
        "textElement.style.cssText = combinedStyle;"
      );
      if (patched === source) throw new Error("drawTextBox.js changed: review the CSP patch");
      return { contents: patched, loader: "js" };
    });
  },
};

async function bundle({ entry, outdir, outfile, plugins }) {
  await mkdir(outdir, { recursive: true });
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    format: "iife",
    target: ["chrome110", "firefox110", "safari16"],
    minify: true,
    sourcemap: false,
    legalComments: "linked",
    outfile: `${outdir}/${outfile}`,
    logLevel: "warning",
    metafile: true,
    plugins,
    define: { "process.env.NODE_ENV": '"production"' },
  });
  const bytes = Object.values(result.metafile.outputs).reduce((sum, o) => sum + o.bytes, 0);
  await writeFile(`${outdir}/BUILT`, `built by frontend/build.mjs, ${bytes} bytes\n`);
  console.log(`${outdir}/${outfile}: ${(bytes / 1e6).toFixed(2)} MB`);
}

await bundle({
  entry: "frontend/viewer/index.js",
  outdir: "static/vendor/viewer",
  outfile: "viewer.js",
  plugins: [nodeShims, cspStyles],
});
await bundle({
  entry: "frontend/brain3d/index.js",
  outdir: "static/vendor/brain3d",
  outfile: "brain3d.js",
  plugins: [],
});
