// Numbers the page derives from the API's replies: the acquisition surface on the posterior
// grid, convergence statistics, rates, and Prometheus latencies.

const SQRT2 = Math.SQRT2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

// Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, plenty for a colour map.
function erf(x) {
  const s = Math.sign(x);
  const a = Math.abs(x);
  const t = 1 / (1 + 0.3275911 * a);
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
    + 0.254829592) * t * Math.exp(-a * a);
  return s * y;
}

const Phi = (z) => 0.5 * (1 + erf(z / SQRT2));
const phi = (z) => INV_SQRT_2PI * Math.exp(-0.5 * z * z);

// The acquisition the engine actually uses (ucb/ei with goal "map" fall back to variance).
export function effectiveAcquisition(spec) {
  if (spec.goal === "map" && (spec.acquisition === "ucb" || spec.acquisition === "ei")) {
    return "variance";
  }
  return spec.acquisition;
}

// The acquisition surface on the grid, larger is better, in output units, with its title.
// integrated_variance needs posterior covariances that the API does not return: the
// pointwise posterior std stands in for it (the same ranking up to how much of the map a
// point informs), and the title says so.
export function acquisitionSurface(spec, mean, std, measured) {
  const kind = effectiveAcquisition(spec);
  const sign = spec.goal === "minimize" ? -1 : 1;
  if (kind === "ucb") {
    const b = Math.sqrt(spec.ucb_beta);
    return {
      title: `UCB (β = ${spec.ucb_beta})`, name: "UCB",
      z: mean.map((m, i) => (m === null ? null : sign * m + b * std[i])),
    };
  }
  if (kind === "ei") {
    const finite = measured.filter(Number.isFinite).map((v) => sign * v);
    const best = finite.length ? Math.max(...finite) : 0;
    return {
      title: "expected improvement", name: "EI",
      z: mean.map((m, i) => {
        const s = std[i];
        if (m === null || !(s > 0)) return null;
        const zz = (sign * m - best) / s;
        return s * (phi(zz) + zz * Phi(zz));
      }),
    };
  }
  if (["integrated_variance", "gradient_variance", "misfit_variance"].includes(kind)) {
    const weighted = {
      gradient_variance: " (the server also weights the map towards where the mean is steep)",
      misfit_variance: " (the server also weights the map towards where the model misfits "
        + "its data: large leave-one-out residuals)",
    }[kind] || "";
    return { title: "≈ posterior std", name: "std", z: std.slice(),
      note: "Integrated variance needs posterior covariances the page does not have: the "
        + "acquisition map shows the posterior std, which ranks places the same way up to "
        + `how much of the map a measurement there would inform${weighted}.` };
  }
  return { title: "posterior std", name: "std", z: std.slice() };
}

// Whether each point (n x d, parameter order) may be measured: outside every forbidden box.
// Convergence leaves the boxes out: their uncertainty never shrinks, by design.
export function allowed(spec, points) {
  const index = Object.fromEntries(spec.parameters.map((p, i) => [p.name, i]));
  const boxes = (spec.forbidden || []).map((b) => Object.entries(b).map(([k, r]) => [index[k], r]));
  return points.map((x) => !boxes.some((box) => box.every(([i, [lo, hi]]) => x[i] >= lo && x[i] <= hi)));
}

export function maxMean(values, mask = null) {
  let max = -Infinity;
  let sum = 0;
  let n = 0;
  for (const [i, v] of values.entries()) {
    if (v === null || !Number.isFinite(v) || (mask && !mask[i])) continue;
    if (v > max) max = v;
    sum += v;
    n += 1;
  }
  return n ? { max, mean: sum / n } : null;
}

// Measurements per minute over the last `window` seconds of the run.
export function recentRate(times, window = 300) {
  if (times.length < 2) return null;
  const last = times[times.length - 1];
  const recent = times.filter((t) => t > last - window);
  const span = Math.max(last - recent[0], 1e-9);
  return recent.length > 1 ? (60 * (recent.length - 1)) / span : null;
}

// Mean of a Prometheus histogram: {name}_sum / {name}_count (label-free series).
export function histogramMean(text, name) {
  const get = (suffix) => {
    const m = text.match(new RegExp(`^${name}_${suffix} ([0-9.eE+-]+)$`, "m"));
    return m ? Number(m[1]) : null;
  };
  const sum = get("sum");
  const count = get("count");
  return count ? { mean: sum / count, count } : null;
}

export function median(values) {
  if (!values.length) return null;
  const s = values.slice().sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : 0.5 * (s[h - 1] + s[h]);
}
