"""Run the ``factory`` command of this environment from a benchmark script, as a user would."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACTORY = str(Path(sys.executable).parent / "factory")


def factory(*args: str, shown: int = 4) -> str:
    """Run ``factory ARGS`` in the repository root and return its stdout; on failure exit with
    the tail of its stderr. Prints the wall time and the first ``shown`` arguments to stderr."""
    t = time.monotonic()
    result = subprocess.run([FACTORY, *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"factory {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    print(f"  ({time.monotonic() - t:.0f} s) factory {' '.join(args[:shown])} ...", file=sys.stderr, flush=True)
    return result.stdout
