/** Finding the Python that has PyTorch (Debian's python3-torch), for benches and tests that compare with it. */
import { spawnSync } from 'node:child_process';

/** The Python interpreter that can import torch (and torchvision, when asked): Debian's first (pyenv shims may shadow it). */
export function findTorchPython(modules = 'torch'): string | undefined {
  for (const python of ['/usr/bin/python3', 'python3']) {
    const probe = spawnSync(python, ['-c', `import ${modules}`], { stdio: 'ignore' });
    if (probe.status === 0) return python;
  }
  return undefined;
}
