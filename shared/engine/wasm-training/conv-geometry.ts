/**
 * Geometry shared by the convolution and pooling gradient kernels: the forward convolution's
 * shape information, its per-axis view, and the geometry record the native kernels take.
 */
import { backend_util, type NamedAttrMap } from '@tensorflow/tfjs-core';
import type { ConvGeometry } from './native/native-kernels.js';

export type Conv2DInfo = backend_util.Conv2DInfo;

/** Forward-convolution info for a gradient kernel's attributes (NHWC only). */
export function forwardConvInfo(xShape: number[], filterShape: number[], attrs: NamedAttrMap, depthwise: boolean): Conv2DInfo {
  const { strides, pad, dimRoundingMode } = attrs as unknown as {
    strides: number | [number, number];
    pad: backend_util.ExplicitPadding | 'valid' | 'same' | number;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
  };
  const dataFormat = (attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC';
  if (dataFormat !== 'NHWC') {
    throw new Error(`wasm convolution gradients support dataFormat 'NHWC' only, got '${dataFormat}'`);
  }
  const dilations = (attrs.dilations as number | [number, number] | undefined) ?? 1;
  return backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    dilations,
    pad,
    dimRoundingMode,
    depthwise,
    'channelsLast',
  );
}

/** One spatial axis of a convolution: input size, output size, filter size, stride, dilation, leading pad. */
export interface Axis {
  inSize: number;
  outSize: number;
  filterSize: number;
  stride: number;
  dilation: number;
  padBefore: number;
}

export function axes(info: Conv2DInfo): [Axis, Axis] {
  return [
    {
      inSize: info.inHeight,
      outSize: info.outHeight,
      filterSize: info.filterHeight,
      stride: info.strideHeight,
      dilation: info.dilationHeight,
      padBefore: info.padInfo.top,
    },
    {
      inSize: info.inWidth,
      outSize: info.outWidth,
      filterSize: info.filterWidth,
      stride: info.strideWidth,
      dilation: info.dilationWidth,
      padBefore: info.padInfo.left,
    },
  ];
}

/** Extent of the input, from the first padded row, that the forward convolution reads. */
export function readExtent(a: Axis): number {
  return (a.outSize - 1) * a.stride + (a.filterSize - 1) * a.dilation + 1;
}

/** A convolution's (or pooling's) geometry as the native kernels take it. */
export function nativeGeometry(info: Conv2DInfo): ConvGeometry {
  return {
    batch: info.batchSize,
    inHeight: info.inHeight,
    inWidth: info.inWidth,
    channels: info.inChannels,
    outHeight: info.outHeight,
    outWidth: info.outWidth,
    filterHeight: info.filterHeight,
    filterWidth: info.filterWidth,
    strideHeight: info.strideHeight,
    strideWidth: info.strideWidth,
    dilationHeight: info.dilationHeight,
    dilationWidth: info.dilationWidth,
    padTop: info.padInfo.top,
    padLeft: info.padInfo.left,
  };
}
