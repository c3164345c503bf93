/**
 * Gradient kernels for 2-D convolutions on the wasm backend, built on the backend's fast
 * XNNPACK kernels (matrix product, forward convolution) plus two native helpers (im2col,
 * col2im in native/kernels.c):
 *
 *  - filter gradient: the product, over all output positions, of the input patches (im2col)
 *    and the output gradient dy. XNNPACK repacks a product's right-hand operand on every call,
 *    so the narrower of the two is put there.
 *  - input gradient: the product dy x filter^T, scattered back into the input's shape (col2im).
 *  - when a product's intermediate would be too large (limits.intermediateBytes), each gradient
 *    falls back to one forward convolution: for the filter, of the transposed input (channels
 *    as batch, batch as channels) with the transposed dy as filter, stride and dilation
 *    swapping roles; for the input, a stride-1 convolution of dy (zeros inserted for strides
 *    > 1) with the filter rotated by 180 degrees and its channels swapped.
 *
 * Depthwise convolutions reuse the input-gradient convolution on the backend's depthwise
 * convolution; their filter gradient is a sum of shifted input views times dy.
 */
import type { NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { axes, forwardConvInfo, nativeGeometry, readExtent, type Axis, type Conv2DInfo } from './conv-geometry.js';
import { KernelScope, withScope } from './kernel-scope.js';
import { nativeCol2Im, nativeIm2Col } from './native/native-kernels.js';

interface KernelArgs {
  inputs: Record<string, TensorInfo>;
  attrs: NamedAttrMap;
  backend: BackendWasm;
}

type Pads = [[number, number], [number, number], [number, number], [number, number]];

function explicitPads(h: [number, number], w: [number, number]): Pads {
  return [[0, 0], h, w, [0, 0]];
}

// ---------------------------------------------------------------------------------------------
// Conv2D

export function conv2dBackpropFilter({ inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { x, dy } = inputs;
  const info = forwardConvInfo(x.shape, attrs.filterShape as number[], attrs, false);
  const patchWidth = info.filterHeight * info.filterWidth * info.inChannels;
  const patchesBytes = 4 * info.batchSize * info.outHeight * info.outWidth * patchWidth;
  return withScope(backend, (s) => {
    if (patchesBytes > limits.intermediateBytes) return filterGradientByConv(s, x, dy, info);
    // XNNPACK repacks the right-hand operand of a product on every call, at a cost comparable to
    // the product itself when it is large: pack the patches when they are much narrower than dy
    // (few input channels, e.g. a first layer), else dy.
    return filterGradientByMatMul(s, x, dy, info, patchWidth * 2 <= info.outChannels ? 'patches' : 'dy');
  });
}

/** Filter gradient as one convolution: input transposed to [inC, H, W, N], dy to [outH, outW, N, outC]. */
function filterGradientByConv(s: KernelScope, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo): TensorInfo {
  const [ah, aw] = axes(info);
  const xT = s.transpose(x, [3, 1, 2, 0]); // [inC, H, W, N]
  const dyT = s.transpose(dy, [1, 2, 0, 3]); // [outH, outW, N, outC]
  const g = s.run(
    'Conv2D',
    { x: xT, filter: dyT },
    {
      strides: [ah.dilation, aw.dilation],
      dilations: [ah.stride, aw.stride],
      pad: explicitPads([ah.padBefore, padAfterForExtent(ah)], [aw.padBefore, padAfterForExtent(aw)]),
      dataFormat: 'NHWC',
    },
  ); // [inC, >= fh, >= fw, outC]: rows past the filter come from unused input rows
  const cropped = s.slice(g, [0, 0, 0, 0], [info.inChannels, info.filterHeight, info.filterWidth, info.outChannels]);
  return s.transpose(cropped, [1, 2, 0, 3]);
}

/**
 * Filter gradient as a product over the P = N*outH*outW positions of the input patches (from a
 * native im2col) and dy: patches^T [fh*fw*inC, P] x dy [P, outC] when dy is the operand to pack,
 * or dy^T [outC, P] x patches [P, fh*fw*inC] (then transposed) when the patches are.
 */
function filterGradientByMatMul(s: KernelScope, x: TensorInfo, dy: TensorInfo, info: Conv2DInfo, packed: 'patches' | 'dy'): TensorInfo {
  const { filterHeight: fh, filterWidth: fw, inChannels: c, outChannels: outC } = info;
  const positions = info.batchSize * info.outHeight * info.outWidth;
  const dy2d = s.reshape(dy, [positions, outC]);
  if (packed === 'dy') {
    const patchesT = s.output([fh * fw * c, positions]);
    nativeIm2Col(s.backend, x, patchesT, true, nativeGeometry(info));
    return s.reshape(s.run('BatchMatMul', { a: patchesT, b: dy2d }, { transposeA: false, transposeB: false }), [fh, fw, c, outC]);
  }
  const patches = s.output([positions, fh * fw * c]);
  nativeIm2Col(s.backend, x, patches, false, nativeGeometry(info));
  const g = s.run('BatchMatMul', { a: dy2d, b: patches }, { transposeA: true, transposeB: false }); // [outC, fh*fw*inC]
  return s.reshape(s.transpose(g, [1, 0]), [fh, fw, c, outC]);
}

/** Bottom/right padding so that the input covers every row the forward convolution reads. */
function padAfterForExtent(a: Axis): number {
  return Math.max(0, readExtent(a) - a.inSize - a.padBefore);
}

/**
 * For each filter tap (kh, kw), the [N, outH, outW, C] view of the zero-padded input that the
 * tap multiplies: x_padded[n, oh*sh + kh*dh, ow*sw + kw*dw, c]. Copied row by row on the heap:
 * the backend's Slice and StridedSlice kernels take ~50 ns per element on such views.
 */
function shiftedInputViews(s: KernelScope, x: TensorInfo, info: Conv2DInfo): TensorInfo[] {
  const [ah, aw] = axes(info);
  const [n, , , c] = x.shape;
  const padded = s.run(
    'PadV2',
    { x },
    {
      paddings: [
        [0, 0],
        [ah.padBefore, padAfterForExtent(ah)],
        [aw.padBefore, padAfterForExtent(aw)],
        [0, 0],
      ],
      constantValue: 0,
    },
  );
  const [, paddedH, paddedW] = padded.shape;
  const rowLength = aw.outSize * c;
  const views: TensorInfo[] = [];
  for (let kh = 0; kh < info.filterHeight; kh++) {
    for (let kw = 0; kw < info.filterWidth; kw++) {
      const view = s.output([n, ah.outSize, aw.outSize, c]);
      const src = s.values(padded);
      const dst = s.values(view);
      let d = 0;
      for (let b = 0; b < n; b++) {
        for (let oh = 0; oh < ah.outSize; oh++, d += rowLength) {
          const row = ((b * paddedH + oh * ah.stride + kh * ah.dilation) * paddedW + kw * aw.dilation) * c;
          if (aw.stride === 1) {
            dst.set(src.subarray(row, row + rowLength), d);
            continue;
          }
          for (let ow = 0; ow < aw.outSize; ow++) {
            const p = row + ow * aw.stride * c;
            dst.set(src.subarray(p, p + c), d + ow * c);
          }
        }
      }
      views.push(view);
    }
  }
  return views;
}

export function conv2dBackpropInput({ inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { dy, filter } = inputs;
  const info = forwardConvInfo(attrs.inputShape as number[], filter.shape, attrs, false);
  const colsBytes = 4 * dy.shape[0] * info.outHeight * info.outWidth * info.filterHeight * info.filterWidth * info.inChannels;
  return withScope(backend, (s) => (colsBytes <= limits.intermediateBytes ? inputGradientByMatMul(s, dy, filter, info) : inputGradientByConv(s, dy, filter, info)));
}

/** Bounds on the temporary memory a gradient kernel may use; tests lower them to cover both paths. */
export const limits = { intermediateBytes: 256 * 2 ** 20 };

/**
 * Input gradient as cols = dy [P, outC] x filter^T [outC, fh*fw*inC] (no wasted products: the
 * full convolution multiplies padding and inserted zeros), scattered back into dx by col2im.
 */
function inputGradientByMatMul(s: KernelScope, dy: TensorInfo, filter: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { filterHeight: fh, filterWidth: fw, inChannels: c, outChannels: outC } = info;
  const positions = info.batchSize * info.outHeight * info.outWidth;
  const cols = s.run('BatchMatMul', { a: s.reshape(dy, [positions, outC]), b: s.reshape(filter, [fh * fw * c, outC]) }, { transposeA: false, transposeB: true });
  const dx = s.output([info.batchSize, info.inHeight, info.inWidth, c]);
  nativeCol2Im(s.backend, cols, dx, nativeGeometry(info));
  return dx;
}

/** Input gradient as one "full" stride-1 convolution with the rotated, channel-swapped filter. */
function inputGradientByConv(s: KernelScope, dy: TensorInfo, filter: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { source, pads } = inputGradientSource(s, dy, info);
  const rotated = s.run('Reverse', { x: filter }, { dims: [0, 1] });
  const swapped = s.transpose(rotated, [0, 1, 3, 2]); // [fh, fw, outC, inC]
  return s.run('Conv2D', { x: source, filter: swapped }, { strides: [1, 1], dilations: [info.dilationHeight, info.dilationWidth], pad: pads, dataFormat: 'NHWC' });
}

/**
 * The output gradient laid out for a stride-1 "full" convolution that yields the input
 * gradient: zeros inserted for strides > 1, cropped where the forward pass never read the
 * input, and the explicit paddings that make the result exactly input-sized.
 */
function inputGradientSource(s: KernelScope, dy: TensorInfo, info: Conv2DInfo): { source: TensorInfo; pads: Pads } {
  const [ah, aw] = axes(info);
  const [n, outH, outW, c] = dy.shape;
  let source = dy;
  if (ah.stride > 1 || aw.stride > 1) {
    const spread = s.reshape(dy, [n, outH, 1, outW, 1, c]);
    const zeros = s.run(
      'PadV2',
      { x: spread },
      {
        paddings: [
          [0, 0],
          [0, 0],
          [0, ah.stride - 1],
          [0, 0],
          [0, aw.stride - 1],
          [0, 0],
        ],
        constantValue: 0,
      },
    );
    source = s.reshape(zeros, [n, outH * ah.stride, outW * aw.stride, c]);
  }
  const [rows, padH] = fullConvolutionWindow(ah, source.shape[1]);
  const [cols, padW] = fullConvolutionWindow(aw, source.shape[2]);
  source = s.slice(source, [0, rows[0], cols[0], 0], [n, rows[1] - rows[0], cols[1] - cols[0], c]);
  return { source, pads: explicitPads(padH, padW) };
}

/** Rows [begin, end) of the spread gradient to keep, and the (non-negative) pads around them. */
function fullConvolutionWindow(a: Axis, sourceSize: number): [[number, number], [number, number]] {
  const reach = (a.filterSize - 1) * a.dilation;
  const before = reach - a.padBefore;
  const after = a.inSize - sourceSize - before + reach;
  const begin = Math.max(0, -before);
  const end = sourceSize - Math.max(0, -after);
  return [
    [begin, end],
    [Math.max(0, before), Math.max(0, after)],
  ];
}

// ---------------------------------------------------------------------------------------------
// DepthwiseConv2dNative: filter [fh, fw, C, M], output channel c*M + m

export function depthwiseBackpropInput({ inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { dy, filter } = inputs;
  const info = forwardConvInfo(attrs.inputShape as number[], filter.shape, attrs, true);
  return withScope(backend, (s) => {
    const [fh, fw, c, m] = filter.shape;
    const { source, pads } = inputGradientSource(s, dy, info);
    const rotated = s.run('Reverse', { x: filter }, { dims: [0, 1] });
    const perChannel = s.reshape(rotated, [fh, fw, c * m, 1]);
    const dx = s.run(
      'DepthwiseConv2dNative',
      { x: source, filter: perChannel },
      { strides: [1, 1], dilations: [info.dilationHeight, info.dilationWidth], pad: pads, dataFormat: 'NHWC' },
    ); // [N, H, W, C*M]
    if (m === 1) return dx;
    const [n, h, w] = dx.shape;
    return s.run('Sum', { x: s.reshape(dx, [n, h, w, c, m]) }, { axis: [4], keepDims: false });
  });
}

export function depthwiseBackpropFilter({ inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { x, dy } = inputs;
  const filterShape = attrs.filterShape as number[];
  const info = forwardConvInfo(x.shape, filterShape, attrs, true);
  return withScope(backend, (s) => {
    const [, , c, m] = filterShape;
    const positions = info.batchSize * info.outHeight * info.outWidth;
    const dyPerChannel = s.reshape(dy, [positions, c, m]);
    const out = s.output(filterShape);
    shiftedInputViews(s, x, info).forEach((view, k) => {
      const product = s.run('Multiply', { a: s.reshape(view, [positions, c, 1]), b: dyPerChannel });
      const tap = s.run('Sum', { x: product }, { axis: [0], keepDims: false }); // [C, M]
      s.values(out).set(s.values(tap), k * c * m);
    });
    return out;
  });
}
