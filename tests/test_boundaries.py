"""The two worlds meet only at the shard format: jaxcodec/ never imports torch (a TPU host needs no torch), and
teachers/ never imports jax. Inside jaxcodec/, only the commands import the training code, the folders
(subpackages) import each other without cycles, and `jaxcodec.load` stays light. Checked statically (every import
statement, lazy ones included) and at run time."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_WORLD = {"torch", "torchaudio", "transformers", "speechbrain"}
JAX_WORLD = {"jax", "jaxlib", "flax", "optax", "orbax", "grain"}
# The package behind `jaxcodec <command>` (and developer commands): the only code outside jaxcodec/train/ that may
# import it, and that nothing else in jaxcodec/ imports (jaxcodec/__main__.py apart).
COMMANDS = "jaxcodec.commands"
COMMANDS_ENTRY = "jaxcodec/__main__.py"
TRAINING = "jaxcodec.train"


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
    code = ("import sys; from jaxcodec import commands; commands.build_parser(); "
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

    from jaxcodec.eval.torch_subprocess import run_on_files
    from jaxcodec.interop import files
    from jaxcodec.interop.layout import InteropError
    from jaxcodec.quality import MetricUnavailable

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
    """Every `sys.executable` child of the library goes through jaxcodec/python_child.py. commands/bench.py is the
    exception: a developer tool whose children run with cwd set to the repository root, in python_child's
    environment."""
    allowed = {"jaxcodec/python_child.py", "jaxcodec/commands/bench.py"}
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "jaxcodec").rglob("*.py")
                   if "sys.executable" in p.read_text() and str(p.relative_to(ROOT)) not in allowed)
    assert users == []


def module_name(path: Path) -> str:
    """The dotted name of a source file of the repository (a package's __init__.py is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of `path` may load, relative imports resolved: `from a.b import c` gives
    a.b and a.b.c (c may be a module)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_only_commands_import_the_training_code():
    """jaxcodec.load, eval, interop and the data pipeline run without jaxcodec/train/: a codec is restored by
    jaxcodec.workdir, the shared plots and quality scores live outside both train/ and eval/."""
    offenders = {}
    for path in sorted((ROOT / "jaxcodec").rglob("*.py")):
        if _within(module_name(path), TRAINING) or _within(module_name(path), COMMANDS):
            continue
        if found := sorted(name for name in imported_modules(path) if _within(name, TRAINING)):
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def command_importers(paths) -> dict[str, list[str]]:
    """The modules among `paths` outside jaxcodec/commands/ (and other than jaxcodec/__main__.py) that import it."""
    offenders = {}
    for path in sorted(paths):
        if _within(module_name(path), COMMANDS) or str(path.relative_to(ROOT)) == COMMANDS_ENTRY:
            continue
        if found := sorted(name for name in imported_modules(path) if _within(name, COMMANDS)):
            offenders[str(path.relative_to(ROOT))] = found
    return offenders


def test_the_library_never_imports_a_command():
    """jaxcodec outside jaxcodec/commands/ is the library: importable, and used, without any command."""
    assert (ROOT / "jaxcodec" / "commands" / "__init__.py").is_file()
    assert command_importers((ROOT / "jaxcodec").rglob("*.py")) == {}


def test_command_importers_finds_a_library_module_importing_a_command(tmp_path, monkeypatch):
    """The check above would fail if, say, tokenizer.py imported a command (lazily, inside a function)."""
    fake = tmp_path / "jaxcodec"
    (fake / "commands").mkdir(parents=True)
    (fake / "commands" / "__init__.py").write_text("from jaxcodec import tokenizer\n")
    (fake / "__main__.py").write_text("from jaxcodec.commands import main\n")
    (fake / "tokenizer.py").write_text("def f():\n    from jaxcodec.commands.encode import loaded_batches\n")
    (fake / "workdir.py").write_text("from .commands import info\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert command_importers(fake.rglob("*.py")) == {
        "jaxcodec/tokenizer.py": ["jaxcodec.commands.encode", "jaxcodec.commands.encode.loaded_batches"],
        "jaxcodec/workdir.py": ["jaxcodec.commands", "jaxcodec.commands.info"]}


def folder_imports() -> dict[str, set[str]]:
    """For each folder (subpackage) of jaxcodec, the other folders its modules import."""
    folders = sorted(p.parent.name for p in (ROOT / "jaxcodec").glob("*/__init__.py"))
    edges = defaultdict(set)
    for folder in folders:
        for path in (ROOT / "jaxcodec" / folder).rglob("*.py"):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[0] == "jaxcodec" and len(parts) > 1 and parts[1] in folders and parts[1] != folder:
                    edges[folder].add(parts[1])
    return {folder: edges[folder] for folder in folders}


def folder_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of folders that import each other, directly or around a loop (Tarjan's strongly connected
    components of more than one folder)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_folder_cycle_finder_finds_a_loop():
    assert folder_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert folder_cycles({"a": {"b"}, "b": set()}) == []


def test_no_two_folders_import_each_other():
    edges = folder_imports()
    cycles = folder_cycles(edges)
    assert cycles == [], {folder: sorted(edges[folder]) for cycle in cycles for folder in cycle}


def test_load_imports_neither_grain_nor_the_training_code_nor_a_command(tmp_path):
    """`jaxcodec.load` of an exported file and of a training workdir (a step-0 checkpoint of the whole training
    state) in a fresh process: the codec comes back without grain, jaxcodec/train/ or any command module."""
    from flax import nnx

    from jaxcodec.interop import files
    from jaxcodec.models.codec import Codec
    from jaxcodec.train import from_codec
    from tests.train.micro import micro_config

    config = micro_config()
    codec = Codec(config, rngs=nnx.Rngs(0))
    files.export_file(codec, config, tmp_path / "micro.safetensors")
    from_codec.write_workdir(codec, config, tmp_path / "W", {"peer": "test"})
    forbidden = sorted({"grain", TRAINING, COMMANDS})
    exported, workdir = str(tmp_path / "micro.safetensors"), str(tmp_path / "W")
    code = (f"import sys; import jaxcodec; jaxcodec.load({exported!r}); print(jaxcodec.load({workdir!r}).step); "
            f"print(sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {forbidden!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["0", "[]"]
