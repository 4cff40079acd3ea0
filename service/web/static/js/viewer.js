// The slice viewer: NiiVue (WebGL2) showing a background volume and named overlay layers, one
// slice of the background's z axis at a time (the axis the report's per-slice Dice counts).
// Why NiiVue and not a plain canvas: see service/web/__init__.py. The library is loaded on demand,
// so the pages without images work even where it was never built.

import { h } from "./ui.js";

let library = null;

export function loadLibrary() {
  library ||= import("../vendor/niivue.js");
  return library;
}

export function hasWebGL2() {
  const gl = document.createElement("canvas").getContext("webgl2");
  gl?.getExtension("WEBGL_lose_context")?.loseContext(); // a probe: give the context back at once
  return Boolean(gl);
}

export class SliceView {
  /** A viewer in `container`, or null when WebGL2 or the library is missing (callers fall back). */
  static async create(container, label) {
    if (!hasWebGL2()) return null;
    let lib;
    try {
      lib = await loadLibrary();
    } catch {
      return null;
    }
    const canvas = h("canvas", { role: "img", "aria-label": label });
    container.replaceChildren(canvas);
    // Asked first, these attributes are the ones NiiVue's context gets: the drawn image stays
    // readable (a test reads its pixels; users can copy it).
    canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: true });
    const nv = new lib.Niivue({
      backColor: [0, 0, 0, 1], crosshairWidth: 0, show3Dcrosshair: false, isColorbar: false,
      logLevel: "error", dragAndDropEnabled: false, isOrientationTextVisible: true,
    });
    await nv.attachToCanvas(canvas);
    nv.setInterpolation(true); // nearest: outlines and labels stay crisp
    return new SliceView(lib, nv, canvas);
  }

  constructor(lib, nv, canvas) {
    this.lib = lib;
    this.nv = nv;
    this.canvas = canvas;
    this.layers = new Map(); // name -> NVImage
    this.slice = 0;
    this.onSlice = null; // called with the slice a wheel or click moved to
    nv.onLocationChange = (location) => this.followLocation(location);
    // Lines are drawn on a 2-D canvas over the image, not as a volume: NiiVue resamples overlay
    // volumes onto the background's voxels, where a grid line could be no thinner than a voxel.
    this.vector = null; // (g, toCanvas, slice) => void
    this.vectorCanvas = h("canvas", { class: "vector", "aria-hidden": "true" });
    canvas.after(this.vectorCanvas);
    const draw = nv.drawScene.bind(nv);
    nv.drawScene = (...args) => { // every redraw, NiiVue's own (zoom, pan, resize) included
      const result = draw(...args);
      this.paintVector();
      return result;
    };
  }

  paintVector() {
    const out = this.vectorCanvas;
    [out.width, out.height] = [this.canvas.width, this.canvas.height];
    const g = out.getContext("2d");
    g.clearRect(0, 0, out.width, out.height);
    const toCanvas = this.vector && this.background ? this.voxelToCanvas() : null;
    if (toCanvas) this.vector(g, toCanvas, this.slice);
  }

  /** NiiVue's fraction of its RAS-ordered volume for a voxel [x, y, z] of the background's own axes. */
  fraction(voxel) {
    const dims = this.background.hdr.dims;
    return (this.background.permRAS || [1, 2, 3]).map((p) => {
      const axis = Math.abs(p) - 1;
      const index = p > 0 ? voxel[axis] : dims[axis + 1] - 1 - voxel[axis];
      return (index + 0.5) / dims[axis + 1];
    });
  }

  /** (x, y) of the slice on screen -> canvas pixels, from three points NiiVue places (the map is affine). */
  voxelToCanvas() {
    const [X, Y] = [this.background.hdr.dims[1], this.background.hdr.dims[2]];
    const at = (x, y) => this.nv.frac2canvasPos(this.fraction([x, y, this.slice]));
    const [o, ex, ey] = [at(0, 0), at(X - 1, 0), at(0, Y - 1)];
    if (!o || !ex || !ey || X < 2 || Y < 2) return null;
    return (x, y) => [0, 1].map((c) => o[c] + (x / (X - 1)) * (ex[c] - o[c]) + (y / (Y - 1)) * (ey[c] - o[c]));
  }

  /** An NVImage from file bytes; `options` as NVImage.loadFromUrl's (colormap, opacity, cal_min, ...). */
  async image(buffer, name, options = {}) {
    return this.lib.NVImage.loadFromUrl({ url: buffer, name, ...options });
  }

  /** `base` is an NVImage whose grid a derived layer shares; `data` replaces its voxels. */
  derived(base, data, { colormap = "gray", labels = null, cal_min, cal_max, negative } = {}) {
    const image = base.clone();
    image.img = data;
    [image.nFrame4D, image.frame4D] = [base.nFrame4D || 1, 0]; // clone() drops them: a 4-D layer must keep its frames
    image.hdr.datatypeCode = { Float32Array: 16, Uint8Array: 2, Int16Array: 4 }[data.constructor.name] ?? 16;
    image.hdr.scl_slope = 1;
    image.hdr.scl_inter = 0;
    if (labels) image.setColormapLabel(labels);
    image.colormap = colormap;
    if (negative) image.colormapNegative = negative;
    image.cal_min = cal_min ?? 0;
    image.cal_max = cal_max ?? 1;
    return image;
  }

  /** Show `background` and the named overlays (hidden until setLayer), ready at slice 0. */
  setVolumes(background, overlays) {
    this.background = background;
    this.nv.addVolume(background);
    this.layers.clear();
    for (const [name, image] of Object.entries(overlays)) {
      image.opacity = 0;
      this.nv.addVolume(image);
      this.layers.set(name, image);
    }
    const dims = background.hdr.dims;
    this.slices = dims[0] >= 3 ? dims[3] : 1;
    this.frames = background.nFrame4D || 1;
    const perm = background.permRAS || [1, 2, 3];
    this.axis = Math.max(0, perm.findIndex((p) => Math.abs(p) === 3)); // RAS axis of the z axis
    this.flipped = perm[this.axis] < 0;
    const types = [this.lib.SLICE_TYPE.SAGITTAL, this.lib.SLICE_TYPE.CORONAL, this.lib.SLICE_TYPE.AXIAL];
    this.nv.setSliceType(types[this.axis]);
    this.setSlice(Math.floor(this.slices / 2));
  }

  setLayer(name, opacity) {
    const image = this.layers.get(name);
    if (!image) return;
    this.nv.setOpacity(this.nv.volumes.indexOf(image), opacity);
  }

  /** Show slice `k` (0-based, along the background's own z axis). */
  setSlice(k) {
    this.slice = Math.min(this.slices - 1, Math.max(0, k));
    const ras = this.flipped ? this.slices - 1 - this.slice : this.slice;
    this.nv.scene.crosshairPos[this.axis] = (ras + 0.5) / this.slices;
    this.nv.drawScene();
  }

  setFrame(t) {
    for (const image of this.nv.volumes) {
      if ((image.nFrame4D || 1) > 1) this.nv.setFrame4D(image.id, Math.min(t, image.nFrame4D - 1));
    }
  }

  followLocation(location) {
    if (!location || !location.frac || this.slices < 2) return;
    const ras = Math.min(this.slices - 1, Math.floor(location.frac[this.axis] * this.slices));
    const k = this.flipped ? this.slices - 1 - ras : ras;
    if (k !== this.slice) {
      this.slice = k;
      if (this.onSlice) this.onSlice(k);
    }
  }

  destroy() {
    try {
      this.nv.cleanup();
    } catch {
      // a half-built viewer has nothing to release
    }
    this.canvas.getContext("webgl2")?.getExtension("WEBGL_lose_context")?.loseContext();
  }
}
