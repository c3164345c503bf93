/** Classification and calibration metrics. */
export { topKAccuracy, negativeLogLikelihood, predictiveEntropy, MetricAccumulator, type MetricSummary } from './classification.js';
export { expectedCalibrationError, CalibrationHistogram, binIndex, type CalibrationResult, type CalibrationBin } from './calibration.js';
