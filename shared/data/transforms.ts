/**
 * Image transforms for the image-folder pipeline, as pure functions with no I/O: the crop
 * geometry of torchvision's RandomResizedCrop and Resize + CenterCrop, the ImageNet
 * normalisation, and the area downscale (plus optional upsample back) used for cross-quality
 * distillation. `TransformSpec` is the one description of a transform that the loader, the
 * decode workers and the benchmark share. Everything here is plain float64 arithmetic on typed
 * arrays, so the results are bit-identical on every machine.
 */
import { CohortError } from '../errors.js';

/** An integer pixel rectangle inside an image. */
export interface Box {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** Lower the resolution after the crop: area-resample to `size`x`size`, then optionally upsample back. */
export interface DownscaleSpec {
  /** Side of the low-resolution image (at most the transform's output side). */
  size: number;
  /**
   * 'none' keeps the small image; 'nearest' (PyTorch 'nearest-exact') or 'bilinear' (PyTorch
   * bilinear, align_corners=False, no antialias) bring it back to the transform's output side.
   */
  upsample: 'none' | 'nearest' | 'bilinear';
}

/** Training augmentation: RandomResizedCrop(size, scale, ratio), then a horizontal flip with p = 0.5. */
export interface TrainTransform {
  kind: 'train';
  size: number;
  /** Range of the crop's area as a fraction of the image's. */
  scale: [number, number];
  /** Range of the crop's width / height. */
  ratio: [number, number];
  flip: boolean;
  downscale?: DownscaleSpec;
}

/** Evaluation: Resize(resize) of the shorter side, then CenterCrop(crop). No randomness. */
export interface EvalTransform {
  kind: 'eval';
  resize: number;
  crop: number;
  downscale?: DownscaleSpec;
}

export type TransformSpec = TrainTransform | EvalTransform;

/** torchvision's ImageNet training transform: RandomResizedCrop(224) + RandomHorizontalFlip. */
export function trainTransform(overrides: Partial<Omit<TrainTransform, 'kind'>> = {}): TrainTransform {
  return { kind: 'train', size: 224, scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flip: true, ...overrides };
}

/** torchvision's ImageNet evaluation transform: Resize(256) + CenterCrop(224). */
export function evalTransform(overrides: Partial<Omit<EvalTransform, 'kind'>> = {}): EvalTransform {
  return { kind: 'eval', resize: 256, crop: 224, ...overrides };
}

const positiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
const range = (v: unknown): v is [number, number] => Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0) && v[0] <= v[1];

/** Throws a CohortError naming the bad field; returns the spec unchanged otherwise. */
export function validateTransform(spec: TransformSpec): TransformSpec {
  const bad = (what: string): never => {
    throw new CohortError(`transform: ${what} (got ${JSON.stringify(spec)})`, { code: 'CONFIG_INVALID' });
  };
  if (spec.kind === 'train') {
    if (!positiveInt(spec.size)) bad('train size must be a positive integer');
    if (!range(spec.scale) || spec.scale[1] > 1) bad('train scale must be [min, max] with 0 < min <= max <= 1');
    if (!range(spec.ratio)) bad('train ratio must be [min, max] with 0 < min <= max');
    if (typeof spec.flip !== 'boolean') bad('train flip must be a boolean');
  } else if (spec.kind === 'eval') {
    if (!positiveInt(spec.resize) || !positiveInt(spec.crop)) bad('eval resize and crop must be positive integers');
    if (spec.crop > spec.resize) bad('eval crop must not exceed resize');
  } else {
    bad(`kind must be 'train' or 'eval'`);
  }
  if (spec.downscale !== undefined) {
    const { size, upsample } = spec.downscale;
    if (!positiveInt(size) || size > outputSide(spec)) bad(`downscale size must be an integer in 1..${outputSide(spec)}`);
    if (!['none', 'nearest', 'bilinear'].includes(upsample)) bad(`downscale upsample must be 'none', 'nearest' or 'bilinear'`);
  }
  return spec;
}

/** Side of the square image the crop + resize produces (before any downscale). */
export function outputSide(spec: TransformSpec): number {
  return spec.kind === 'train' ? spec.size : spec.crop;
}

/** [height, width, 3] of one transformed sample, downscale included. */
export function transformOutputShape(spec: TransformSpec): [number, number, 3] {
  const side = spec.downscale && spec.downscale.upsample === 'none' ? spec.downscale.size : outputSide(spec);
  return [side, side, 3];
}

/** Python's round(): halves go to the even neighbour (torchvision's geometry uses it). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/**
 * torchvision's RandomResizedCrop.get_params: up to 10 tries of an area fraction uniform in
 * `scale` and an aspect ratio log-uniform in `ratio`, kept when the rounded box fits; otherwise
 * the centred crop of the whole image clamped to the ratio range. Random numbers are drawn in
 * torchvision's order (area, ratio, then top, left on success) from `random` (floats in [0, 1)).
 */
export function randomResizedCropBox(width: number, height: number, random: () => number, options: { scale?: [number, number]; ratio?: [number, number] } = {}): Box {
  const [s0, s1] = options.scale ?? [0.08, 1];
  const [r0, r1] = options.ratio ?? [3 / 4, 4 / 3];
  const area = width * height;
  const logR0 = Math.log(r0);
  const logR1 = Math.log(r1);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = area * (s0 + (s1 - s0) * random());
    const aspect = Math.exp(logR0 + (logR1 - logR0) * random());
    const w = roundHalfEven(Math.sqrt(targetArea * aspect));
    const h = roundHalfEven(Math.sqrt(targetArea / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = Math.floor(random() * (height - h + 1));
      const left = Math.floor(random() * (width - w + 1));
      return { left, top, width: w, height: h };
    }
  }
  return centerFallbackBox(width, height, [r0, r1]);
}

/** RandomResizedCrop's fallback: the largest centred box whose ratio is clamped to `ratio`. */
export function centerFallbackBox(width: number, height: number, ratio: [number, number]): Box {
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < Math.min(...ratio)) h = roundHalfEven(w / Math.min(...ratio));
  else if (inRatio > Math.max(...ratio)) w = roundHalfEven(h * Math.max(...ratio));
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}

/**
 * The evaluation geometry of torchvision's Resize(resize) + CenterCrop(crop): the shorter side
 * becomes `resize` and the longer int(resize * long / short); the crop is centred with offsets
 * round((size - crop) / 2). The crop box is in the resized image's coordinates.
 */
export function resizeShorterCenterCropBox(
  width: number,
  height: number,
  options: { resize?: number; crop?: number } = {},
): { resized: { width: number; height: number }; crop: Box } {
  const resize = options.resize ?? 256;
  const crop = options.crop ?? 224;
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.trunc((resize * long) / short);
  const resized = width <= height ? { width: resize, height: newLong } : { width: newLong, height: resize };
  if (crop > resized.width || crop > resized.height) {
    throw new CohortError(`center crop ${crop} is larger than the resized image ${resized.width}x${resized.height}`, { code: 'CONFIG_INVALID' });
  }
  return {
    resized,
    crop: {
      left: roundHalfEven((resized.width - crop) / 2),
      top: roundHalfEven((resized.height - crop) / 2),
      width: crop,
      height: crop,
    },
  };
}

/** Per-channel RGB statistics: normalised = (pixel / 255 - mean) / std. */
export interface RgbNormalization {
  mean: [number, number, number];
  std: [number, number, number];
}

export const IMAGENET_NORMALIZATION: RgbNormalization = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

function normalizationTable(norm: RgbNormalization): Float32Array {
  const table = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) for (let v = 0; v < 256; v++) table[c * 256 + v] = (v / 255 - norm.mean[c]) / norm.std[c];
  return table;
}

const IMAGENET_TABLE = normalizationTable(IMAGENET_NORMALIZATION);

/**
 * uint8 RGB HWC -> float32 HWC, (v / 255 - mean[c]) / std[c] computed in float64 and rounded
 * once to float32. Writes into `out` at `offset` (a new array by default) and returns `out`.
 */
export function normalizeRgb(src: Uint8Array, out: Float32Array = new Float32Array(src.length), offset = 0, norm: RgbNormalization = IMAGENET_NORMALIZATION): Float32Array {
  if (src.length % 3 !== 0) throw new CohortError(`normalizeRgb: ${src.length} values is not a whole number of RGB pixels`, { code: 'INVALID_ARGUMENT' });
  if (offset + src.length > out.length) throw new CohortError(`normalizeRgb: output of ${out.length} values has no room at ${offset}`, { code: 'INVALID_ARGUMENT' });
  const table = norm === IMAGENET_NORMALIZATION ? IMAGENET_TABLE : normalizationTable(norm);
  for (let i = 0; i < src.length; i += 3) {
    out[offset + i] = table[src[i]];
    out[offset + i + 1] = table[256 + src[i + 1]];
    out[offset + i + 2] = table[512 + src[i + 2]];
  }
  return out;
}

/** For each output index along one axis: the first input index it covers and the weights. */
interface AxisWeights {
  start: Int32Array;
  weights: Float64Array[];
}

/** Output pixel o covers [o * in / out, (o + 1) * in / out); each input pixel weighs its overlap / (in / out). */
function areaWeights(inSize: number, outSize: number): AxisWeights {
  const start = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const a = (o * inSize) / outSize;
    const b = ((o + 1) * inSize) / outSize;
    const first = Math.floor(a);
    const last = Math.min(inSize, Math.ceil(b));
    const w = new Float64Array(last - first);
    for (let i = first; i < last; i++) w[i - first] = ((Math.min(i + 1, b) - Math.max(i, a)) * outSize) / inSize;
    start[o] = first;
    weights.push(w);
  }
  return { start, weights };
}

function checkImage(src: ArrayLike<number>, width: number, height: number, channels: number, outWidth: number, outHeight: number, what: string): void {
  for (const [name, v] of Object.entries({ width, height, channels, outWidth, outHeight })) {
    if (!positiveInt(v)) throw new CohortError(`${what}: ${name} must be a positive integer, got ${v}`, { code: 'INVALID_ARGUMENT' });
  }
  if (src.length !== width * height * channels) {
    throw new CohortError(`${what}: ${src.length} values is not ${width}x${height}x${channels}`, { code: 'INVALID_ARGUMENT' });
  }
}

/**
 * Area resampling of an HWC image (what OpenCV calls INTER_AREA, PyTorch adaptive average
 * pooling when the factor is an integer): each output pixel is the average of the input pixels
 * under it, fractional overlaps weighted by their area. Integer factors take an exact box sum /
 * count; other factors separable overlap weights (horizontal pass, then vertical). float64
 * accumulation, float32 result.
 */
export function areaResize(src: ArrayLike<number>, width: number, height: number, channels: number, outWidth: number, outHeight: number): Float32Array {
  checkImage(src, width, height, channels, outWidth, outHeight, 'areaResize');
  const out = new Float32Array(outWidth * outHeight * channels);
  if (width % outWidth === 0 && height % outHeight === 0) {
    const fx = width / outWidth;
    const fy = height / outHeight;
    const count = fx * fy;
    const sums = new Float64Array(channels);
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        sums.fill(0);
        for (let y = oy * fy; y < (oy + 1) * fy; y++) {
          for (let x = ox * fx; x < (ox + 1) * fx; x++) {
            const p = (y * width + x) * channels;
            for (let c = 0; c < channels; c++) sums[c] += src[p + c];
          }
        }
        const q = (oy * outWidth + ox) * channels;
        for (let c = 0; c < channels; c++) out[q + c] = sums[c] / count;
      }
    }
    return out;
  }
  const wx = areaWeights(width, outWidth);
  const wy = areaWeights(height, outHeight);
  const rows = new Float64Array(height * outWidth * channels);
  for (let y = 0; y < height; y++) {
    for (let ox = 0; ox < outWidth; ox++) {
      const w = wx.weights[ox];
      const q = (y * outWidth + ox) * channels;
      for (let k = 0; k < w.length; k++) {
        const p = (y * width + wx.start[ox] + k) * channels;
        for (let c = 0; c < channels; c++) rows[q + c] += w[k] * src[p + c];
      }
    }
  }
  const acc = new Float64Array(channels);
  for (let oy = 0; oy < outHeight; oy++) {
    const w = wy.weights[oy];
    for (let ox = 0; ox < outWidth; ox++) {
      acc.fill(0);
      for (let k = 0; k < w.length; k++) {
        const p = ((wy.start[oy] + k) * outWidth + ox) * channels;
        for (let c = 0; c < channels; c++) acc[c] += w[k] * rows[p + c];
      }
      const q = (oy * outWidth + ox) * channels;
      for (let c = 0; c < channels; c++) out[q + c] = acc[c];
    }
  }
  return out;
}

/** Nearest-neighbour resize with half-pixel centres (PyTorch 'nearest-exact'): in = floor((o + 0.5) * in / out). */
export function resizeNearest(src: ArrayLike<number>, width: number, height: number, channels: number, outWidth: number, outHeight: number): Float32Array {
  checkImage(src, width, height, channels, outWidth, outHeight, 'resizeNearest');
  const out = new Float32Array(outWidth * outHeight * channels);
  for (let oy = 0; oy < outHeight; oy++) {
    const y = Math.min(height - 1, Math.floor(((oy + 0.5) * height) / outHeight));
    for (let ox = 0; ox < outWidth; ox++) {
      const x = Math.min(width - 1, Math.floor(((ox + 0.5) * width) / outWidth));
      const p = (y * width + x) * channels;
      const q = (oy * outWidth + ox) * channels;
      for (let c = 0; c < channels; c++) out[q + c] = src[p + c];
    }
  }
  return out;
}

/** Linear interpolation taps along one axis, PyTorch align_corners=False: s = max(0, (o + 0.5) * in / out - 0.5). */
function linearTaps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; t: Float64Array } {
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const t = new Float64Array(outSize);
  for (let o = 0; o < outSize; o++) {
    const s = Math.max(0, ((o + 0.5) * inSize) / outSize - 0.5);
    const f = Math.min(Math.floor(s), inSize - 1);
    i0[o] = f;
    i1[o] = Math.min(f + 1, inSize - 1);
    t[o] = s - f;
  }
  return { i0, i1, t };
}

/** Bilinear resize as PyTorch F.interpolate(mode='bilinear', align_corners=False, antialias=False). */
export function resizeBilinear(src: ArrayLike<number>, width: number, height: number, channels: number, outWidth: number, outHeight: number): Float32Array {
  checkImage(src, width, height, channels, outWidth, outHeight, 'resizeBilinear');
  const out = new Float32Array(outWidth * outHeight * channels);
  const tx = linearTaps(width, outWidth);
  const ty = linearTaps(height, outHeight);
  for (let oy = 0; oy < outHeight; oy++) {
    const r0 = ty.i0[oy] * width;
    const r1 = ty.i1[oy] * width;
    const v = ty.t[oy];
    for (let ox = 0; ox < outWidth; ox++) {
      const u = tx.t[ox];
      const a = (r0 + tx.i0[ox]) * channels;
      const b = (r0 + tx.i1[ox]) * channels;
      const c0 = (r1 + tx.i0[ox]) * channels;
      const d = (r1 + tx.i1[ox]) * channels;
      const q = (oy * outWidth + ox) * channels;
      for (let c = 0; c < channels; c++) {
        const top = (1 - u) * src[a + c] + u * src[b + c];
        const bottom = (1 - u) * src[c0 + c] + u * src[d + c];
        out[q + c] = (1 - v) * top + v * bottom;
      }
    }
  }
  return out;
}

/**
 * The cross-quality step on a square HWC image of side `side`: area-downscale to
 * `spec.size`, then upsample back to `side` unless `spec.upsample` is 'none'. All three steps
 * are affine with weights summing to 1, so it commutes with the normalisation.
 */
export function applyDownscale(image: ArrayLike<number>, side: number, channels: number, spec: DownscaleSpec): Float32Array {
  const small = areaResize(image, side, side, channels, spec.size, spec.size);
  if (spec.upsample === 'none') return small;
  const up = spec.upsample === 'nearest' ? resizeNearest : resizeBilinear;
  return up(small, spec.size, spec.size, channels, side, side);
}
