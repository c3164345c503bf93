/**
 * The run-config keys of an ONNX teacher (`teachers: [{ name, onnx: teacher.onnx, input: {...} }]`):
 * any ONNX classifier, run forward-only in onnxruntime-node, in place of a zoo `model`. `input`
 * says how the model wants its images: layout and the per-channel mean and std (on the [0, 1]
 * scale) it was trained with; the worker re-normalises the dataset's images to those.
 */
import { z } from 'zod';

const perChannel = z.array(z.number()).min(1);

export const onnxInputSchema = z.strictObject({
  layout: z.enum(['NCHW', 'NHWC']).default('NCHW'),
  /** Default: the dataset's own normalisation (images fed as the zoo models get them). */
  mean: perChannel.optional(),
  std: z.array(z.number().positive()).min(1).optional(),
});

export type OnnxInput = z.output<typeof onnxInputSchema>;

/** The keys a teacher gains: an ONNX file instead of a zoo model. */
export const onnxTeacherKeys = {
  /** An ONNX model file (its first input takes the images, its first output is the logits). */
  onnx: z.string().min(1).optional(),
  input: onnxInputSchema.optional(),
};

interface TeacherShape {
  model?: unknown;
  onnx?: string;
  input?: unknown;
  checkpoint?: string;
}

/** Exactly one of `model` and `onnx`; `input` only with `onnx`, `checkpoint` only with `model`. */
export function checkTeacherSource(teacher: TeacherShape, issue: (path: string[], message: string) => void): void {
  if (teacher.onnx === undefined && teacher.model === undefined) issue(['model'], "a teacher needs a 'model' (a zoo network) or an 'onnx' file");
  if (teacher.onnx !== undefined && teacher.model !== undefined) issue(['onnx'], "a teacher has either a 'model' or an 'onnx' file, not both");
  if (teacher.onnx === undefined && teacher.input !== undefined) issue(['input'], "'input' describes an 'onnx' teacher's images; this teacher has none");
  if (teacher.onnx !== undefined && teacher.checkpoint !== undefined) issue(['checkpoint'], "an 'onnx' teacher's weights are in its file; 'checkpoint' applies to zoo models");
  if (teacher.input && typeof teacher.input === 'object') {
    const { mean, std } = teacher.input as { mean?: number[]; std?: number[] };
    if ((mean === undefined) !== (std === undefined)) issue(['input', mean === undefined ? 'mean' : 'std'], "give both 'mean' and 'std', or neither");
    else if (mean && std && mean.length !== std.length) issue(['input', 'std'], `${std.length} values for ${mean.length} means`);
  }
}

/** The model a record names for a worker: the zoo name, or `onnx:<file>` for an ONNX teacher. */
export function workerModelName(teacher: { model?: { name: string }; onnx?: string }): string {
  return teacher.model?.name ?? `onnx:${teacher.onnx}`;
}
