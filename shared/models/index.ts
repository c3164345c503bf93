/**
 * The model zoo: networks built by name from a config (`buildModel`), with their exits and
 * parameter counts.
 */
export {
  buildModel,
  exitModel,
  resolveModelConfig,
  trainableParameterCount,
  describeModels,
  MODEL_NAMES,
  type ModelName,
  type ModelConfig,
  type ResolvedModelConfig,
  type CohortModel,
} from './registry.js';
export { referenceCnn } from './reference-cnn.js';
