/**
 * Seeded weight initialisers for the model zoo: every initialiser a model asks for gets the
 * next seed of one counter, so two processes that build the same model with the same seed get
 * bit-identical weights (a cohort's members differ only by their seeds); dropout layers get
 * seeds from a second counter.
 */
import * as tfl from '@tensorflow/tfjs-layers';

type Initializer = ReturnType<typeof tfl.initializers.glorotUniform>;

export interface SeededInitializers {
  /** Glorot-uniform (Keras' default for dense and conv layers). */
  glorot(): Initializer;
  /** He-normal with fan-out, torchvision's choice for ResNet and MobileNetV2 convolutions. */
  heFanOut(): Initializer;
  /** The seed of the next dropout layer (a counter of its own, so weights do not depend on dropout). */
  dropoutSeed(): number | undefined;
}

export function seededInitializers(seed: number | undefined): SeededInitializers {
  let next = seed;
  const take = () => (next === undefined ? undefined : next++);
  let nextDropout = seed === undefined ? undefined : (Math.imul(seed, 0x2545f491) ^ 0x6a09e667) >>> 0;
  return {
    dropoutSeed: () => (nextDropout === undefined ? undefined : nextDropout++),
    glorot: () => tfl.initializers.glorotUniform({ seed: take() }),
    heFanOut: () => tfl.initializers.varianceScaling({ scale: 2, mode: 'fanOut', distribution: 'normal', seed: take() }),
  };
}
