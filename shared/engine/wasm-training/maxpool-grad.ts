/**
 * MaxPoolGrad for the wasm backend as a single scatter pass over the heap: each pooling
 * window sends its output gradient to the position of its maximum (the first maximum in
 * row-major window order, as the cpu backend chooses). The backend's own kernel rescans every
 * window once per input pixel and was the slowest kernel of a training step.
 */
import { backend_util, type NamedAttrMap, type TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

export function maxPoolGrad({
  inputs,
  attrs,
  backend,
}: {
  inputs: Record<string, TensorInfo>;
  attrs: NamedAttrMap;
  backend: BackendWasm;
}): TensorInfo {
  const { dy, input } = inputs;
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as {
    filterSize: number | [number, number];
    strides: number | [number, number];
    pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  const info = backend_util.computePool2DInfo(
    input.shape as [number, number, number, number],
    filterSize,
    strides,
    1,
    pad,
    dimRoundingMode,
  );
  const dx = backend.makeOutput(input.shape, 'float32');
  const x = backend.typedArrayFromHeap(input) as Float32Array;
  const g = backend.typedArrayFromHeap(dy) as Float32Array;
  const out = backend.typedArrayFromHeap(dx) as Float32Array;
  out.fill(0);

  const { batchSize, inHeight, inWidth, inChannels: channels, outHeight, outWidth } = info;
  const { strideHeight, strideWidth, filterHeight, filterWidth } = info;
  const { top: padTop, left: padLeft } = info.padInfo;
  const rowStride = inWidth * channels;
  // Per-channel running maximum and its heap position for the current window: the inner loop
  // then walks memory contiguously over channels.
  const best = new Float32Array(channels);
  const at = new Int32Array(channels);
  let gi = 0;
  for (let n = 0; n < batchSize; n++) {
    const batchBase = n * inHeight * rowStride;
    for (let oh = 0; oh < outHeight; oh++) {
      const h0 = oh * strideHeight - padTop;
      const hBegin = Math.max(0, h0);
      const hEnd = Math.min(inHeight, h0 + filterHeight);
      for (let ow = 0; ow < outWidth; ow++, gi += channels) {
        const w0 = ow * strideWidth - padLeft;
        const wBegin = Math.max(0, w0);
        const wEnd = Math.min(inWidth, w0 + filterWidth);
        best.fill(-Infinity);
        at.fill(-1);
        for (let h = hBegin; h < hEnd; h++) {
          for (let w = wBegin; w < wEnd; w++) {
            const p = batchBase + h * rowStride + w * channels;
            for (let c = 0; c < channels; c++) {
              const v = x[p + c];
              if (v > best[c]) {
                best[c] = v;
                at[c] = p + c;
              }
            }
          }
        }
        for (let c = 0; c < channels; c++) if (at[c] >= 0) out[at[c]] += g[gi + c];
      }
    }
  }
  return dx;
}
