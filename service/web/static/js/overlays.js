// Pure functions that turn the service's outputs into what the viewer draws over the fixed image.
// Volumes are flat typed arrays in NIfTI order: index = x + X * (y + Y * z) (x fastest), with
// more slices (z, then frames) simply stacked; every operation here works within one (x, y) plane.

/** Keep the voxels of each label that touch another value in-plane: the mask's outlines. */
export function outline(labels, X, Y) {
  const out = new labels.constructor(labels.length);
  const plane = X * Y;
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i];
    if (!v) continue;
    const p = i % plane;
    const x = p % X;
    const y = (p - x) / X;
    const edge = x === 0 || x === X - 1 || y === 0 || y === Y - 1 ||
      labels[i - 1] !== v || labels[i + 1] !== v || labels[i - X] !== v || labels[i + X] !== v;
    if (edge) out[i] = v;
  }
  return out;
}

function inverse3(m) {
  const [[a, b, c], [d, e, f], [g, h, k]] = m;
  const det = a * (e * k - f * h) - b * (d * k - f * g) + c * (d * h - e * g);
  return [
    [(e * k - f * h) / det, (c * h - b * k) / det, (b * f - c * e) / det],
    [(f * g - d * k) / det, (a * k - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det],
  ];
}

/**
 * The displacement in voxels of its own grid, in-plane: {dx, dy} (Float32Array, X*Y*Z each).
 * `field` is readNifti's result: u(p) in mm, ITK LPS; the affine maps voxels to RAS mm, so
 * u_RAS = (-u_x, -u_y, u_z) and the voxel shift is A⁻¹ u_RAS (A the affine's 3×3 part).
 */
export function voxelShift(field) {
  const [X, Y, Z, , C] = field.dims;
  const n = X * Y * Z;
  const inv = inverse3(field.affine.slice(0, 3).map((row) => row.slice(0, 3)));
  const dx = new Float32Array(n);
  const dy = new Float32Array(n);
  const u = field.data;
  for (let i = 0; i < n; i++) {
    const ras = [-u[i], -u[n + i], C > 2 ? u[2 * n + i] : 0];
    dx[i] = inv[0][0] * ras[0] + inv[0][1] * ras[1] + inv[0][2] * ras[2];
    dy[i] = inv[1][0] * ras[0] + inv[1][1] * ras[1] + inv[1][2] * ras[2];
  }
  return { dx, dy, X, Y, Z };
}

/**
 * The deformation grid as lines, the way preview.png draws it: every `step` voxels a row and a column
 * of the fixed grid, each point p moved to p + u(p) (in-plane, voxels). Returns, per slice z, a list
 * of polylines of [x, y] voxel positions.
 */
export function gridLines({ dx, dy, X, Y, Z }, step = Math.max(3, Math.round(Math.max(X, Y) / 16))) {
  const moved = (x, y, z) => {
    const i = x + X * (y + Y * z);
    return [x + dx[i], y + dy[i]];
  };
  const start = (n) => Math.round(((n - 1) % step) / 2); // centre the lattice in the image
  return Array.from({ length: Z }, (_, z) => {
    const lines = [];
    for (let y = start(Y); y < Y; y += step) lines.push(Array.from({ length: X }, (_, x) => moved(x, y, z)));
    for (let x = start(X); x < X; x += step) lines.push(Array.from({ length: Y }, (_, y) => moved(x, y, z)));
    return lines;
  });
}

/** log2 of the Jacobian determinant (0: volume kept); folding (J <= 0) is shown as strongest compression. */
export function logJacobian(jacobian, floor = -2) {
  return Float32Array.from(jacobian, (j) => (j > 0 ? Math.max(floor, Math.log2(j)) : floor));
}

// Okabe-Ito colours, safe for colour-blind readers: label k takes colour (k - 1) mod 8.
const PALETTE = [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178],
  [213, 94, 0], [204, 121, 167], [255, 255, 255]];

export const labelColour = (label) => PALETTE[(label - 1) % PALETTE.length];

/** A NiiVue label colour map for labels 0..maxLabel (0 transparent), all in `colour` if given. */
export function labelColourMap(maxLabel, names = {}, colour = null) {
  const map = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: [""] };
  for (let k = 1; k <= maxLabel; k++) {
    const [r, g, b] = colour || labelColour(k);
    map.R.push(r); map.G.push(g); map.B.push(b); map.A.push(255); map.I.push(k);
    map.labels.push(names[k] || `label ${k}`);
  }
  return map;
}
