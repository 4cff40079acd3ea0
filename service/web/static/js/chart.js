// A small line chart on a 2-D canvas: series of (x, y) points, auto-scaled axes, a legend, and an
// optional vertical marker (e.g. the cine frame on screen). Enough for training curves and volumes.

export const COLOURS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#000000"];

function niceStep(span, ticks) {
  const raw = span / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
}

function range(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-12) [lo, hi] = [lo - (Math.abs(lo) || 1) * 0.05, hi + (Math.abs(hi) || 1) * 0.05];
  return [lo, hi];
}

const label = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toPrecision(3));

/**
 * Draw `series` ([{name, points: [[x, y], ...]}]) on `canvas` with `title`; `marker` is an x to mark.
 * The canvas keeps the point count in data-points, so a test or a script can see that it updated.
 */
export function drawChart(canvas, series, { title = "", xLabel = "", marker = null } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 200;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  g.font = "12px system-ui, sans-serif";
  g.fillStyle = "#1b1f24";
  g.fillText(title, 8, 15);
  const points = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  canvas.dataset.points = String(points.length);
  const box = { left: 52, right: width - 10, top: 26, bottom: height - 60 };
  if (!points.length) {
    g.fillStyle = "#5a6270";
    g.fillText("no data yet", box.left, (box.top + box.bottom) / 2);
    return;
  }
  const [x0, x1] = range(points.map(([x]) => x));
  const [y0, y1] = range(points.map(([, y]) => y));
  const px = (x) => box.left + ((x - x0) / (x1 - x0)) * (box.right - box.left);
  const py = (y) => box.bottom - ((y - y0) / (y1 - y0)) * (box.bottom - box.top);
  axes(g, box, { x0, x1, y0, y1, px, py, xLabel });
  series.forEach((s, n) => {
    g.strokeStyle = s.colour || COLOURS[n % COLOURS.length];
    g.lineWidth = 1.8;
    g.beginPath();
    s.points.filter(([, y]) => Number.isFinite(y)).forEach(([x, y], i) => (i ? g.lineTo(px(x), py(y)) : g.moveTo(px(x), py(y))));
    g.stroke();
  });
  if (marker !== null) {
    g.strokeStyle = "#b42318";
    g.setLineDash([4, 3]);
    g.beginPath();
    g.moveTo(px(marker), box.top);
    g.lineTo(px(marker), box.bottom);
    g.stroke();
    g.setLineDash([]);
  }
  legend(g, series, box, height);
}

function axes(g, box, { x0, x1, y0, y1, px, py, xLabel }) {
  g.strokeStyle = "#aab3bf";
  g.lineWidth = 1;
  g.fillStyle = "#5a6270";
  g.strokeRect(box.left, box.top, box.right - box.left, box.bottom - box.top);
  const ys = niceStep(y1 - y0, 6);
  for (let y = Math.ceil(y0 / ys) * ys; y <= y1 + 1e-12; y += ys) {
    g.fillText(String(label(y)), 4, py(y) + 4);
    g.beginPath(); g.moveTo(box.left - 3, py(y)); g.lineTo(box.left, py(y)); g.stroke();
  }
  const xs = niceStep(x1 - x0, 5);
  for (let x = Math.ceil(x0 / xs) * xs; x <= x1 + 1e-12; x += xs) {
    g.fillText(String(label(x)), px(x) - 6, box.bottom + 14);
  }
  g.fillText(xLabel, box.right - g.measureText(xLabel).width, box.bottom + 28);
}

function legend(g, series, box, height) {
  let [x, y] = [8, height - 28];
  series.forEach((s, n) => {
    const width = 24 + g.measureText(s.name).width;
    if (x > 8 && x + width > box.right + 10) [x, y] = [8, y + 13]; // a second row
    g.fillStyle = s.colour || COLOURS[n % COLOURS.length];
    g.fillRect(x, y, 9, 9);
    g.fillStyle = "#1b1f24";
    g.fillText(s.name, x + 13, y + 9);
    x += width;
  });
}
