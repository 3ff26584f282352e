/* The scan viewer on Cornerstone3D (bundled by frontend/build.mjs into
   static/vendor/viewer/viewer.js). static/js/viewer.js stays the page's controller (frames,
   window presets, restore, downloads); when this bundle is there it calls
   MedimgCornerstone.mount(viewer), and the image is drawn by a Cornerstone stack viewport
   instead of the plain <img>, with OHIF's mouse and keyboard bindings (docs/viewer.md).

   Pixels reach Cornerstone through the `medimg:` image loader (images.js): a DICOM (the
   de-identified export, or the original restored sealed and decrypted in the page) gives the
   stored values with their rescale, so window/level acts on real values (HU on CT); a PNG
   (the redacted or grid image of any other file) gives its 8-bit values. */
import { mountViewer } from "./mount.js";

window.MedimgCornerstone = { mount: mountViewer };
