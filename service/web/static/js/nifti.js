// A NIfTI-1 reader for the one file NiiVue cannot show as it is: the displacement, a vector image
// (x, y, z, 1, components) in mm, ITK's LPS convention (README, "Outputs and report.json").
// Gzip is undone by the browser's own DecompressionStream.

const TYPES = {
  2: Uint8Array, 4: Int16Array, 8: Int32Array, 16: Float32Array, 64: Float64Array,
  256: Int8Array, 512: Uint16Array, 768: Uint32Array,
};

export async function gunzip(buffer) {
  const head = new Uint8Array(buffer, 0, 2);
  if (head[0] !== 0x1f || head[1] !== 0x8b) return buffer;
  const stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

/** The voxel-to-RAS-mm matrix (4×4, rows) from the sform, else the qform, else the spacing alone. */
function affine(view, le, pixdim) {
  const f = (offset) => view.getFloat32(offset, le);
  if (view.getInt16(254, le) > 0) {
    return [0, 1, 2].map((r) => [0, 1, 2, 3].map((c) => f(280 + 16 * r + 4 * c))).concat([[0, 0, 0, 1]]);
  }
  const [dx, dy, dz] = [pixdim[1], pixdim[2], pixdim[3]];
  if (view.getInt16(252, le) <= 0) return [[dx, 0, 0, 0], [0, dy, 0, 0], [0, 0, dz, 0], [0, 0, 0, 1]];
  const [b, c, d] = [f(256), f(260), f(264)];
  const a = Math.sqrt(Math.max(0, 1 - b * b - c * c - d * d));
  const qfac = pixdim[0] < 0 ? -1 : 1;
  const rot = [
    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
  ];
  const scale = [dx, dy, dz * qfac];
  const offset = [f(268), f(272), f(276)];
  return rot.map((row, r) => [...row.map((v, col) => v * scale[col]), offset[r]]).concat([[0, 0, 0, 1]]);
}

/** Read a NIfTI-1 file (gzipped or not): {dims: [x, y, z, t, c], affine, data}; data is x-fastest. */
export async function readNifti(buffer) {
  const raw = await gunzip(buffer);
  const view = new DataView(raw);
  const le = view.getInt32(0, true) === 348;
  if (!le && view.getInt32(0, false) !== 348) throw new Error("not a NIfTI-1 file");
  const ndim = view.getInt16(40, le);
  const dims = [1, 2, 3, 4, 5].map((i) => (i <= ndim ? Math.max(1, view.getInt16(40 + 2 * i, le)) : 1));
  const pixdim = [0, 1, 2, 3].map((i) => view.getFloat32(76 + 4 * i, le));
  const type = TYPES[view.getInt16(70, le)];
  if (!type) throw new Error(`NIfTI datatype ${view.getInt16(70, le)} is not read here`);
  const count = dims.reduce((n, d) => n * d, 1);
  const offset = Math.max(352, Math.round(view.getFloat32(108, le)));
  const bytes = raw.slice(offset, offset + count * type.BYTES_PER_ELEMENT); // aligned copy
  let data = new type(bytes);
  if (!le && type.BYTES_PER_ELEMENT > 1) data = swapped(bytes, type);
  const slope = view.getFloat32(112, le);
  if (slope && (slope !== 1 || view.getFloat32(116, le) !== 0)) {
    const inter = view.getFloat32(116, le);
    data = Float32Array.from(data, (v) => v * slope + inter);
  }
  return { dims, affine: affine(view, le, pixdim), data };
}

function swapped(bytes, type) {
  const view = new DataView(bytes);
  const out = new type(bytes.byteLength / type.BYTES_PER_ELEMENT);
  const get = { 2: "getInt16", 4: type === Float32Array ? "getFloat32" : "getInt32", 8: "getFloat64" };
  const name = get[type.BYTES_PER_ELEMENT];
  for (let i = 0; i < out.length; i++) out[i] = view[name](i * type.BYTES_PER_ELEMENT, false);
  return out;
}

