"""Starting a Python child process (`python -m teachers.…`, `python -m jaxcodec precompute`): the one place that
decides which code such a child runs.

A plain `python -m module` puts the working directory first on sys.path, so a torch.py or numpy.py in whatever
folder the user runs jaxcodec from would be imported instead of the real package, and a stray PYTHONPATH can do
the same. The child therefore runs with `-P` (no working directory, no script folder on sys.path) and with
PYTHONPATH replaced by the one folder that holds jaxcodec and teachers, found from this package's own location
(a source checkout used without `pip install` still works; an installed package adds nothing).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

# The folder holding the jaxcodec and teachers packages: the repository root of a checkout, or site-packages.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def command(module: str, *args: str) -> list[str]:
    """`python -P -m module *args` with this interpreter."""
    return [sys.executable, "-P", "-m", module, *args]


def environment() -> dict[str, str]:
    """This process's environment without PYTHONPATH; the package root instead when it is not site-packages
    (adding site-packages to PYTHONPATH would put it before the standard library)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if str(PACKAGE_ROOT) not in {str(Path(p).resolve()) for p in site.getsitepackages()}:
        env["PYTHONPATH"] = str(PACKAGE_ROOT)
    return env


def run(module: str, args: list[str], **options) -> subprocess.CompletedProcess:
    """subprocess.run of `command(module, *args)` in `environment()`; `options` go to subprocess.run."""
    return subprocess.run(command(module, *args), env=environment(), **options)
