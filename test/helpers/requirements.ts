/**
 * What a test needs from the machine beyond `npm install`: a command from a Debian package
 * (chromium, sshd, ip, script, mount) or root. On a developer's machine a test whose needs are
 * not met is skipped, saying what is missing and how to get it; under CI=true (`.ci/run`, which
 * installs those packages and runs as root) the same test fails instead, so that CI runs every
 * test or says why not.
 */
import assert from 'node:assert/strict';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { TestContext } from 'node:test';

export interface Requirement {
  /** What is missing, in words: "chromium", "root". */
  what: string;
  /** How to get it: "apt-get install chromium". */
  how: string;
  met: () => boolean;
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Whether `name` (a command, or a path) can be run: an executable file on the PATH or at that path. */
export function onPath(name: string): boolean {
  if (name.includes('/')) return executable(name);
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && executable(join(dir, name)));
}

/** The command `name` (or an absolute path) from Debian's package `pkg`. */
export function tool(name: string, pkg: string): Requirement {
  return { what: name, how: `apt-get install ${pkg}`, met: () => onPath(name) };
}

export const asRoot: Requirement = { what: 'root', how: 'run the tests as root', met: () => process.getuid?.() === 0 };

/** Why a test cannot run here ("needs chromium (apt-get install chromium), root (run the tests as root)"), or undefined when every requirement is met. */
export function unmet(...requirements: Requirement[]): string | undefined {
  const missing = requirements.filter((r) => !r.met());
  return missing.length === 0 ? undefined : `needs ${missing.map((r) => `${r.what} (${r.how})`).join(', ')}`;
}

/** Whether this is a CI run, where every test's requirements must be met. */
export function requiredHere(): boolean {
  return process.env.CI === 'true';
}

/**
 * For the start of a test body: when `why` says the test cannot run here (from unmet(), or a
 * setup step that failed), skips it with that reason and returns true; under CI=true fails it
 * with that reason. Returns false when `why` is undefined.
 */
export function cannotRun(t: TestContext, why: string | undefined): boolean {
  if (why === undefined) return false;
  if (requiredHere()) assert.fail(`${why}; under CI=true this test is required (.ci/run installs what the tests need)`);
  t.skip(why);
  return true;
}
