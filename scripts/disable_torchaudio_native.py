"""Keeps PyPI's torchaudio from loading its CUDA native libraries on a CPU-only machine.

speechbrain imports torchaudio. PyPI has no torchaudio built for torch 2.13 CPU, so pip takes a CUDA build whose
`lib/*.so` files need libc10_cuda.so and make `import torchaudio` fail. torchaudio treats a missing extension as
"not built" and still imports; its pure-Python functions (the ones speechbrain uses to load and run
ECAPA-TDNN) work. This script, run by `make install`, renames the native libraries to `*.so.disabled` only when
they fail to load, and says what it did. It is idempotent, and never imports torchaudio in this process.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def main() -> int:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        print("torchaudio not installed: nothing to do")
        return 0
    probe = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode == 0:
        print("torchaudio imports with its native libraries: nothing to do")
        return 0
    if "Could not load this library" not in probe.stderr and "cannot open shared object" not in probe.stderr:
        sys.stderr.write(probe.stderr)
        print("torchaudio fails to import for another reason (above); not touching it", file=sys.stderr)
        return 1
    lib_dir = Path(spec.submodule_search_locations[0]) / "lib"
    for so in sorted(lib_dir.glob("*.so")):
        so.rename(so.with_name(so.name + ".disabled"))
        print(f"disabled {so} (a CUDA build that cannot load here)")
    check = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    if check.returncode != 0:
        sys.stderr.write(check.stderr)
        return 1
    print("torchaudio now imports without its native extension")
    return 0


if __name__ == "__main__":
    sys.exit(main())
