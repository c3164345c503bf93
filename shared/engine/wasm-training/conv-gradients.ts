/**
 * Gradient kernels for 2-D convolutions on the wasm backend, written as forward convolutions
 * so that they run on the backend's fast XNNPACK convolution:
 *
 *  - filter gradient: a convolution of the transposed input (channels as batch, batch as
 *    channels) with the transposed output gradient as filter; the forward stride becomes the
 *    dilation and the forward dilation the stride.
 *  - input gradient: a stride-1 convolution of the output gradient (zeros inserted between rows
 *    and columns when the forward stride is > 1) with the filter rotated by 180 degrees and its
 *    in/out channels swapped.
 *
 * Depthwise convolutions reuse the input-gradient construction with the backend's depthwise
 * convolution; their filter gradient is a sum of shifted input views times the output gradient.
 */
import type { NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { axes, forwardConvInfo, readExtent, type Axis, type Conv2DInfo } from './conv-geometry.js';
import { KernelScope, withScope } from './kernel-scope.js';

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
  return withScope(backend, (s) => {
    const [ah, aw] = axes(info);
    const padAfter = (a: Axis) => Math.max(0, readExtent(a) - a.inSize - a.padBefore);
    const xT = s.transpose(x, [3, 1, 2, 0]); // [inC, H, W, N]
    const dyT = s.transpose(dy, [1, 2, 0, 3]); // [outH, outW, N, outC]
    const g = s.run(
      'Conv2D',
      { x: xT, filter: dyT },
      {
        strides: [ah.dilation, aw.dilation],
        dilations: [ah.stride, aw.stride],
        pad: explicitPads([ah.padBefore, padAfter(ah)], [aw.padBefore, padAfter(aw)]),
        dataFormat: 'NHWC',
      },
    ); // [inC, >= fh, >= fw, outC]: rows past the filter come from unused input rows
    const cropped = s.slice(g, [0, 0, 0, 0], [info.inChannels, info.filterHeight, info.filterWidth, info.outChannels]);
    return s.transpose(cropped, [1, 2, 0, 3]);
  });
}

export function conv2dBackpropInput({ inputs, attrs, backend }: KernelArgs): TensorInfo {
  const { dy, filter } = inputs;
  const info = forwardConvInfo(attrs.inputShape as number[], filter.shape, attrs, false);
  return withScope(backend, (s) => {
    const { source, pads } = inputGradientSource(s, dy, info);
    const rotated = s.run('Reverse', { x: filter }, { dims: [0, 1] });
    const swapped = s.transpose(rotated, [0, 1, 3, 2]); // [fh, fw, outC, inC]
    return s.run(
      'Conv2D',
      { x: source, filter: swapped },
      { strides: [1, 1], dilations: [info.dilationHeight, info.dilationWidth], pad: pads, dataFormat: 'NHWC' },
    );
  });
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
        paddings: [[0, 0], [0, 0], [0, ah.stride - 1], [0, 0], [0, aw.stride - 1], [0, 0]],
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
    const [fh, fw, c, m] = filterShape;
    const [ah, aw] = axes(info);
    const n = info.batchSize;
    const positions = n * info.outHeight * info.outWidth;
    const padAfter = (a: Axis) => Math.max(0, readExtent(a) - a.inSize - a.padBefore);
    const padded = s.run(
      'PadV2',
      { x },
      { paddings: [[0, 0], [ah.padBefore, padAfter(ah)], [aw.padBefore, padAfter(aw)], [0, 0]], constantValue: 0 },
    );
    const dyPerChannel = s.reshape(dy, [positions, c, m]);
    const out = s.output(filterShape);
    for (let kh = 0; kh < fh; kh++) {
      for (let kw = 0; kw < fw; kw++) {
        const r0 = kh * ah.dilation;
        const c0 = kw * aw.dilation;
        const view = s.run(
          'StridedSlice',
          { x: padded },
          {
            begin: [0, r0, c0, 0],
            end: [n, r0 + (ah.outSize - 1) * ah.stride + 1, c0 + (aw.outSize - 1) * aw.stride + 1, c],
            strides: [1, ah.stride, aw.stride, 1],
            beginMask: 0,
            endMask: 0,
            ellipsisMask: 0,
            newAxisMask: 0,
            shrinkAxisMask: 0,
          },
        ); // [N, outH, outW, C]
        const product = s.run('Multiply', { a: s.reshape(view, [positions, c, 1]), b: dyPerChannel });
        const tap = s.run('Sum', { x: product }, { axis: [0], keepDims: false }); // [C, M]
        s.values(out).set(s.values(tap), (kh * fw + kw) * c * m);
      }
    }
    return out;
  });
}
