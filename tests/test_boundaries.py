"""The two worlds meet only at the shard format: jaxcodec/ never imports torch (a TPU host needs no torch), and
teachers/ never imports jax. Checked statically (every import statement, lazy ones included) and at run time."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_WORLD = {"torch", "torchaudio", "transformers", "speechbrain"}
JAX_WORLD = {"jax", "jaxlib", "flax", "optax", "orbax", "grain"}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_jaxcodec_never_imports_torch():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & TORCH_WORLD)
                 for p in (ROOT / "jaxcodec").rglob("*.py") if imported_packages(p) & TORCH_WORLD}
    assert offenders == {}


def test_teachers_never_import_jax():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & JAX_WORLD)
                 for p in (ROOT / "teachers").rglob("*.py") if imported_packages(p) & JAX_WORLD}
    assert offenders == {}


def test_cli_parser_loads_neither_world():
    code = ("import sys; from jaxcodec import cli; cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(TORCH_WORLD | JAX_WORLD)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_training_loads_no_torch_at_run_time(tmp_path):
    """tensorboardX imports torch whenever it is installed (2 s of a resumed run's start-up); the loop's writer
    must not, and torch must still import normally afterwards."""
    code = ("import sys; from pathlib import Path; from jaxcodec.train import loop, tensorboard; "
            f"board = tensorboard.TensorBoard(Path({str(tmp_path)!r}), 0); board.scalars(1, {{'loss': 1.0}}); "
            "board.close(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{sorted(TORCH_WORLD)!r})); import torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_python_children_run_no_code_from_the_working_directory_or_pythonpath(tmp_path, monkeypatch):
    """Issue 18 #9: `python -m` puts the working directory first on sys.path, so a torch.py in the folder the user
    ran `jaxcodec import` from was executed by the torch subprocess. Here a torch.py in the working directory, a
    numpy.py on a stray PYTHONPATH and a module named like the evaluation tool each write a marker if imported."""
    import pytest

    from jaxcodec.eval.metrics import MetricUnavailable
    from jaxcodec.eval.torch_tools import run_on_files
    from jaxcodec.interop import files
    from jaxcodec.interop.layout import InteropError

    here, stray = tmp_path / "cwd", tmp_path / "stray"
    here.mkdir()
    stray.mkdir()
    planted = {here / "torch.py", stray / "numpy.py", here / "jaxcodec_planted_tool.py"}
    for module in planted:
        module.write_text(f"open({str(module.with_suffix('.ran'))!r}, 'w').close()\n")
    (here / "peer.pt").write_bytes(b"\x80\x04garbage")
    monkeypatch.chdir(here)
    monkeypatch.setenv("PYTHONPATH", str(stray))
    with pytest.raises(InteropError, match="not a PyTorch checkpoint"):  # the real torch read it
        files.read_checkpoint("peer.pt")
    with pytest.raises(MetricUnavailable, match="No module named jaxcodec_planted_tool"):
        run_on_files("jaxcodec_planted_tool", [], [], ".json", lambda path: None)
    assert sorted(p.name for p in tmp_path.rglob("*.ran")) == []


def test_python_children_are_started_by_one_helper():
    """Every `sys.executable` child of the library goes through jaxcodec/python_child.py. bench.py is the
    exception: a developer tool whose children run with cwd set to the repository root, in python_child's
    environment."""
    allowed = {"python_child.py", "bench.py"}
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "jaxcodec").rglob("*.py")
                   if "sys.executable" in p.read_text() and p.name not in allowed)
    assert users == []
