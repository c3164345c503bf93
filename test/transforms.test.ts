/** The pure image transforms: crop geometry, normalisation, area downscale and upsampling, against hand-computed values. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 } from '../shared/data/sampler.js';
import {
  IMAGENET_NORMALIZATION,
  applyDownscale,
  areaResize,
  centerFallbackBox,
  evalTransform,
  normalizeRgb,
  randomResizedCropBox,
  resizeBilinear,
  resizeNearest,
  resizeShorterCenterCropBox,
  roundHalfEven,
  trainTransform,
  transformOutputShape,
  validateTransform,
  type TransformSpec,
} from '../shared/data/transforms.js';
import { CohortError } from '../shared/errors.js';

const sequence = (values: number[]) => {
  let i = 0;
  return () => {
    assert.ok(i < values.length, 'drew more random numbers than expected');
    return values[i++];
  };
};

test('roundHalfEven is Python round()', () => {
  assert.deepEqual([0.5, 1.5, 2.5, 3.5, 2.4, 2.6, 7].map(roundHalfEven), [0, 2, 2, 4, 2, 3, 7]);
});

test('randomResizedCropBox: a hand-computed draw, and the centre fallback after 10 misses', () => {
  // area 200*100*(0.08 + 0.92*0.25) = 6200, ratio exp(mid of log range) = 1: side round(78.74) = 79;
  // top floor(0.25 * (100-79+1)) = 5, left floor(0.75 * (200-79+1)) = 91.
  assert.deepEqual(randomResizedCropBox(200, 100, sequence([0.25, 0.5, 0.25, 0.75])), { left: 91, top: 5, width: 79, height: 79 });
  // ratio 2 at full area never fits a 100x100 image: fallback clamps the ratio to 2, centred.
  const misses = sequence(Array.from({ length: 20 }, () => 0.5));
  assert.deepEqual(randomResizedCropBox(100, 100, misses, { scale: [1, 1], ratio: [2, 2] }), { left: 0, top: 25, width: 100, height: 50 });
  assert.deepEqual(centerFallbackBox(300, 100, [3 / 4, 4 / 3]), { left: 83, top: 0, width: 133, height: 100 });
  assert.deepEqual(centerFallbackBox(120, 100, [3 / 4, 4 / 3]), { left: 0, top: 0, width: 120, height: 100 });
});

test('randomResizedCropBox: boxes are integer and inside the image; non-fallback boxes respect scale and ratio', () => {
  const random = mulberry32(1234);
  const scale: [number, number] = [0.08, 1];
  const ratio: [number, number] = [3 / 4, 4 / 3];
  let drawn = 0;
  for (let trial = 0; trial < 3000; trial++) {
    const width = 1 + Math.floor(random() * 600);
    const height = 1 + Math.floor(random() * 600);
    const box = randomResizedCropBox(width, height, random, { scale, ratio });
    for (const v of Object.values(box)) assert.ok(Number.isInteger(v));
    assert.ok(box.left >= 0 && box.top >= 0 && box.width >= 1 && box.height >= 1, JSON.stringify(box));
    assert.ok(box.left + box.width <= width && box.top + box.height <= height, `${JSON.stringify(box)} in ${width}x${height}`);
    if (JSON.stringify(box) === JSON.stringify(centerFallbackBox(width, height, ratio))) continue;
    drawn++;
    // w and h are each rounded by at most 0.5 from sqrt(area * r) and sqrt(area / r).
    const slack = 0.5 * (box.width + box.height) + 1;
    const area = box.width * box.height;
    assert.ok(area >= scale[0] * width * height - slack && area <= scale[1] * width * height + slack, `area ${area} of ${width}x${height}`);
    const w = box.width;
    const h = box.height;
    assert.ok((w + 0.5) / Math.max(h - 0.5, 1e-9) >= ratio[0] && (w - 0.5) / (h + 0.5) <= ratio[1], `ratio ${w}/${h}`);
  }
  assert.ok(drawn > 2000, `only ${drawn} boxes were drawn rather than fallbacks`);
});

test('resize-shorter + centre-crop geometry follows torchvision', () => {
  // int(256 * 500 / 375) = 341; left round((341 - 224) / 2) = round(58.5) = 58 (half to even).
  assert.deepEqual(resizeShorterCenterCropBox(500, 375), { resized: { width: 341, height: 256 }, crop: { left: 58, top: 16, width: 224, height: 224 } });
  assert.deepEqual(resizeShorterCenterCropBox(375, 500), { resized: { width: 256, height: 341 }, crop: { left: 16, top: 58, width: 224, height: 224 } });
  assert.deepEqual(resizeShorterCenterCropBox(37, 53, { resize: 36, crop: 32 }), { resized: { width: 36, height: 51 }, crop: { left: 2, top: 10, width: 32, height: 32 } });
  assert.deepEqual(resizeShorterCenterCropBox(100, 100, { resize: 7, crop: 4 }).crop, { left: 2, top: 2, width: 4, height: 4 }); // round(1.5) = 2
});

test('ImageNet normalisation is (v / 255 - mean) / std per channel, for every byte value', () => {
  const src = new Uint8Array(256 * 3);
  for (let v = 0; v < 256; v++) src.fill(v, 3 * v, 3 * v + 3);
  const out = normalizeRgb(src);
  const { mean, std } = IMAGENET_NORMALIZATION;
  for (let v = 0; v < 256; v++) for (let c = 0; c < 3; c++) assert.equal(out[3 * v + c], Math.fround((v / 255 - mean[c]) / std[c]));
  assert.equal(out[0], Math.fround(-0.485 / 0.229));
  // written at an offset into a larger buffer
  const big = new Float32Array(10 + src.length);
  normalizeRgb(src, big, 10);
  assert.deepEqual(big.subarray(10), out);
  assert.equal(big[9], 0);
});

test('area downscale by an integer factor is the box average', () => {
  // 4x4, 2 channels: channel 0 = 0..15, channel 1 = 100 + 0..15.
  const src = new Float32Array(32);
  for (let i = 0; i < 16; i++) {
    src[2 * i] = i;
    src[2 * i + 1] = 100 + i;
  }
  const out = areaResize(src, 4, 4, 2, 2, 2);
  const box = (a: number, b: number, c: number, d: number) => (a + b + c + d) / 4;
  assert.deepEqual(Array.from(out), [box(0, 1, 4, 5), box(100, 101, 104, 105), box(2, 3, 6, 7), 104.5, box(8, 9, 12, 13), 110.5, box(10, 11, 14, 15), 112.5]);
  assert.deepEqual(Array.from(areaResize(src, 4, 4, 2, 1, 1)), [7.5, 107.5]);
  assert.deepEqual(Array.from(areaResize([1, 2, 3, 4, 5, 6], 6, 1, 1, 2, 1)), [2, 5]);
});

test('area downscale by a fractional factor weighs partial pixels by their overlap', () => {
  const [a, b, c] = [3, 10, 40];
  const row = areaResize([a, b, c], 3, 1, 1, 2, 1);
  assert.ok(Math.abs(row[0] - (a + 0.5 * b) / 1.5) < 1e-5 && Math.abs(row[1] - (0.5 * b + c) / 1.5) < 1e-5, `${row}`);
  // 3x3 -> 2x2: the corner output covers 1 full, 2 half and 1 quarter pixel.
  const g = [1, 2, 3, 4, 5, 6, 7, 8, 9];
  const out = areaResize(g, 3, 3, 1, 2, 2);
  const expected = [
    (1 + 0.5 * 2 + 0.5 * 4 + 0.25 * 5) / 2.25,
    (3 + 0.5 * 2 + 0.5 * 6 + 0.25 * 5) / 2.25,
    (7 + 0.5 * 4 + 0.5 * 8 + 0.25 * 5) / 2.25,
    (9 + 0.5 * 6 + 0.5 * 8 + 0.25 * 5) / 2.25,
  ];
  out.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-5, `${i}: ${v} vs ${expected[i]}`));
  // Independent route: 6x6 -> 4x4 by area equals duplicating every pixel 2x2 (12x12) then 3x3 box averages.
  const random = mulberry32(5);
  const src = Float32Array.from({ length: 6 * 6 * 3 }, () => Math.round(random() * 255));
  const doubled = new Float32Array(12 * 12 * 3);
  for (let y = 0; y < 12; y++) for (let x = 0; x < 12; x++) for (let ch = 0; ch < 3; ch++) doubled[(y * 12 + x) * 3 + ch] = src[((y >> 1) * 6 + (x >> 1)) * 3 + ch];
  const direct = areaResize(src, 6, 6, 3, 4, 4);
  const viaBox = areaResize(doubled, 12, 12, 3, 4, 4);
  direct.forEach((v, i) => assert.ok(Math.abs(v - viaBox[i]) < 1e-4, `${i}: ${v} vs ${viaBox[i]}`));
});

test('224 -> 112 -> 56 by area equals 224 -> 56, and upsampling returns to 224', () => {
  const random = mulberry32(9);
  const image = Float32Array.from({ length: 224 * 224 * 3 }, () => random() * 4 - 2);
  const half = applyDownscale(image, 224, 3, { size: 112, upsample: 'none' });
  assert.equal(half.length, 112 * 112 * 3);
  const quarter = areaResize(half, 112, 112, 3, 56, 56);
  const direct = applyDownscale(image, 224, 3, { size: 56, upsample: 'none' });
  assert.equal(direct.length, 56 * 56 * 3);
  direct.forEach((v, i) => assert.ok(Math.abs(v - quarter[i]) < 1e-5));
  const nearest = applyDownscale(image, 224, 3, { size: 56, upsample: 'nearest' });
  assert.equal(nearest.length, 224 * 224 * 3);
  for (const [y, x] of [
    [0, 0],
    [3, 3],
    [4, 7],
    [223, 100],
    [101, 222],
  ]) {
    for (let c = 0; c < 3; c++) assert.equal(nearest[(y * 224 + x) * 3 + c], direct[((y >> 2) * 56 + (x >> 2)) * 3 + c]);
  }
  assert.equal(applyDownscale(image, 224, 3, { size: 112, upsample: 'bilinear' }).length, 224 * 224 * 3);
  // the same order on a uniform image changes nothing
  const flat = new Float32Array(224 * 224 * 3).fill(0.75);
  assert.ok(applyDownscale(flat, 224, 3, { size: 56, upsample: 'bilinear' }).every((v) => v === 0.75));
});

test('upsampling: bilinear is PyTorch align_corners=False, nearest is nearest-exact', () => {
  // F.interpolate(tensor([[[[0., 4.]]]]), size=(1, 4), mode='bilinear', align_corners=False) -> [0, 1, 3, 4]
  assert.deepEqual(Array.from(resizeBilinear([0, 4], 2, 1, 1, 4, 1)), [0, 1, 3, 4]);
  // 2x2 -> 4x4, row 1 (s = 0.25): 0.75 * top + 0.25 * bottom
  const up = resizeBilinear([0, 4, 8, 12], 2, 2, 1, 4, 4);
  assert.deepEqual(Array.from(up.subarray(4, 8)), [2, 3, 5, 6]);
  assert.deepEqual(Array.from(resizeNearest([1, 2, 3], 3, 1, 1, 6, 1)), [1, 1, 2, 2, 3, 3]);
  assert.deepEqual(Array.from(resizeNearest([1, 2, 3, 4, 5, 6], 6, 1, 1, 3, 1)), [2, 4, 6]);
});

test('transform specs: defaults, output shapes, and validation errors', () => {
  assert.deepEqual(trainTransform(), { kind: 'train', size: 224, scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flip: true });
  assert.deepEqual(evalTransform(), { kind: 'eval', resize: 256, crop: 224 });
  assert.deepEqual(transformOutputShape(trainTransform({ downscale: { size: 56, upsample: 'none' } })), [56, 56, 3]);
  assert.deepEqual(transformOutputShape(evalTransform({ downscale: { size: 56, upsample: 'bilinear' } })), [224, 224, 3]);
  const bad: TransformSpec[] = [
    trainTransform({ size: 0 }),
    trainTransform({ scale: [0.5, 0.1] }),
    trainTransform({ scale: [0.5, 1.5] }),
    trainTransform({ ratio: [0, 1] }),
    evalTransform({ resize: 200, crop: 224 }),
    trainTransform({ downscale: { size: 300, upsample: 'none' } }),
    trainTransform({ downscale: { size: 56, upsample: 'cubic' as 'none' } }),
  ];
  for (const spec of bad) assert.throws(() => validateTransform(spec), CohortError, JSON.stringify(spec));
});
