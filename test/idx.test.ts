/** IDX files: byte layout checked by hand, gzip detection by content, and clear parse errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { encodeIdx, parseIdx, readIdxFile, writeIdxFile } from '../shared/data/idx.js';
import { CohortError } from '../shared/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'cohort-idx-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const values = Uint8Array.from({ length: 24 }, (_, i) => (i * 37) % 256);

test('encodeIdx writes the magic 0x00000803 and big-endian dims before the values', () => {
  const bytes = encodeIdx({ dims: [2, 3, 4], data: values });
  assert.deepEqual(Array.from(bytes.subarray(0, 16)), [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
  assert.deepEqual(bytes.subarray(16), values);
  const labels = encodeIdx({ dims: [300], data: new Uint8Array(300) });
  assert.deepEqual(Array.from(labels.subarray(0, 8)), [0, 0, 8, 1, 0, 0, 1, 44]);
});

test('files round-trip, plain and gzipped (gzip found by content, whatever the name)', async () => {
  for (const gzip of [false, true]) {
    const path = join(dir, `cube-${gzip}`);
    writeIdxFile(path, { dims: [2, 3, 4], data: values }, { gzip });
    const raw = readFileSync(path);
    assert.equal(raw[0] === 0x1f && raw[1] === 0x8b, gzip);
    const back = await readIdxFile(path);
    assert.deepEqual(back.dims, [2, 3, 4]);
    assert.deepEqual(Array.from(back.data), Array.from(values));
  }
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.includes('.tmp-')),
    [],
    'no temporary files left behind',
  );
});

function expectError(bytes: Uint8Array, pattern: RegExp): void {
  assert.throws(
    () => parseIdx(bytes, 'data/bad-file'),
    (error: unknown) => error instanceof CohortError && /^data\/bad-file: /.test(error.message) && pattern.test(error.message),
  );
}

test('malformed files are CohortErrors naming the file and the problem', () => {
  const good = encodeIdx({ dims: [2, 3, 4], data: values });
  expectError(good.subarray(0, good.length - 5), /expected 24 bytes of values after the header \(dims 2x3x4\), found 19/);
  expectError(Uint8Array.from([0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]), /IDX value type 0x0d is not supported/);
  expectError(Uint8Array.from([1, 0, 8, 1, 0, 0, 0, 0]), /must start with two zero bytes/);
  expectError(Uint8Array.from([0, 0]), /only 2 bytes/);
  expectError(Uint8Array.from([0, 0, 8, 3, 0, 0]), /truncated IDX header/);
  expectError(gzipSync(good).subarray(0, 20), /corrupt gzip data/);
});

test('a missing file is an error naming its path', async () => {
  await assert.rejects(readIdxFile(join(dir, 'nope')), (e: unknown) => e instanceof CohortError && e.message === `IDX file not found: ${join(dir, 'nope')}`);
});
