/**
 * Decodes one image-folder sample with sharp (libvips) into uint8 RGB HWC at the transform's
 * output side: EXIF orientation applied first, then the crop, the resize and the flip. The crop
 * box and flip come from sampleRandom(seed, epoch, index, memberSeed), so every process draws
 * the same geometry for the same sample (pixels are identical wherever the libvips build is).
 *
 * Colour: alpha is dropped before any resampling (as PIL's convert('RGB')), grey and CMYK
 * become 3-channel sRGB.
 * Resampling uses sharp's 'cubic' kernel (Catmull-Rom, close to PIL's bicubic) for every
 * resize; it rings less than lanczos3 and costs less. A file that cannot be read or decoded is
 * returned as `{ ok: false }`, never thrown, so the loader can skip it and count it.
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { sampleRandom } from './sampler.js';
import { outputSide, randomResizedCropBox, resizeShorterCenterCropBox, type Box, type TransformSpec } from './transforms.js';

export const RESIZE_KERNEL = 'cubic';

/** What picks a sample's random view: the cohort seed, the epoch, the dataset index, the member's own seed. */
export interface SampleKey {
  seed: number;
  epoch: number;
  index: number;
  memberSeed: number;
}

export type DecodeResult =
  | {
      ok: true;
      /** side * side * 3 bytes, RGB, row-major. */
      pixels: Uint8Array;
      side: number;
      /** The crop in the (EXIF-oriented) source for train, in the resized image for eval. */
      box: Box;
      flipped: boolean;
    }
  | { ok: false; path: string; reason: string };

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error)).split('\n')[0];

/** Reads, crops, resizes and flips one image; never throws for a bad file. */
export async function decodeImage(path: string, key: SampleKey, spec: TransformSpec): Promise<DecodeResult> {
  let input: Buffer;
  try {
    input = await readFile(path);
  } catch (error) {
    return { ok: false, path, reason: `cannot read: ${message(error)}` };
  }
  try {
    // 'error' rejects undecodable and truncated data but tolerates libjpeg warnings (as PIL does).
    const meta = await sharp(input, { failOn: 'error' }).metadata();
    const { width, height } = meta.autoOrient;
    const side = outputSide(spec);
    let pipeline = sharp(input, { failOn: 'error', autoOrient: true });
    if (meta.hasAlpha) {
      // libvips resamples images with alpha premultiplied, which shifts the colours of
      // translucent pixels; drop the alpha first (as PIL's convert('RGB') does), then crop.
      const { data, info } = await pipeline.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
      pipeline = sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } });
    }
    let box: Box;
    let flipped = false;
    if (spec.kind === 'train') {
      const random = sampleRandom(key.seed, key.epoch, key.index, key.memberSeed);
      box = randomResizedCropBox(width, height, random, spec);
      flipped = spec.flip && random() < 0.5;
      // extract before resize crops the source; flop always applies after the crop.
      pipeline = pipeline.extract(box).resize(side, side, { fit: 'fill', kernel: RESIZE_KERNEL }).flop(flipped);
    } else {
      const geometry = resizeShorterCenterCropBox(width, height, spec);
      box = geometry.crop;
      // extract after resize crops the resized image.
      pipeline = pipeline.resize(geometry.resized.width, geometry.resized.height, { fit: 'fill', kernel: RESIZE_KERNEL }).extract(box);
    }
    const { data, info } = await pipeline.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.width !== side || info.height !== side || info.channels !== 3 || data.length !== side * side * 3) {
      return { ok: false, path, reason: `decoded to ${info.width}x${info.height}x${info.channels}, expected ${side}x${side}x3` };
    }
    return { ok: true, pixels: new Uint8Array(data.buffer, data.byteOffset, data.length), side, box, flipped };
  } catch (error) {
    return { ok: false, path, reason: message(error) };
  }
}
