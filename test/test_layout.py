"""The layout: the package imports downwards only (no cycles, never a script), and a script
copied out of the repository runs wherever the package is installed."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tianshou_offline
from tianshou_offline.data.atari_buffer import AtariBufferWriter

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(tianshou_offline.__file__).resolve().parent
# Each module's layer; a module may import its own layer (without cycles) and the layers below.
LAYERS = {
    "tianshou_offline.errors": 0,
    "tianshou_offline.files": 0,
    "tianshou_offline.tianshou_adapter": 0,
    "tianshou_offline.data": 1,
    "tianshou_offline.atari": 1,
    "tianshou_offline.updates": 2,
    "tianshou_offline.algorithms": 3,
    "tianshou_offline.run": 3,
    "tianshou_offline.results": 4,
    "tianshou_offline.dataset_maker": 4,
}
# The modules outside the package: the example scripts, benchmarks and tests.
OUTSIDE = {
    p.stem
    for folder in ("examples", "benchmarks", "test")
    for p in (REPO_ROOT / folder).rglob("*.py")
}


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known
            }
    return found


def layer_of(module: str) -> int:
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} has no layer in test_layout.LAYERS: add it there")


def test_package_imports_downwards_without_cycles_and_never_a_script():
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        imported = imports_of(path, name, set(modules))
        scripts = sorted(m for m in imported if m.split(".")[0] in OUTSIDE)
        assert not scripts, f"{name} imports {scripts}, which are not part of the package"
        graph[name] = {m for m in imported if m in modules and m != name}
    for name, targets in graph.items():
        for target in targets:
            if modules[target].name != "__init__.py":  # (the package's __init__ files are empty)
                assert layer_of(target) <= layer_of(name), f"{name} imports {target}, a layer above"

    # depth-first search for a cycle
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [node, target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_cycle_detection_fails_on_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other are found."""
    package = tmp_path / "tianshou_offline"
    (package / "data").mkdir(parents=True)
    for init in (package / "__init__.py", package / "data" / "__init__.py"):
        init.write_text("")
    (package / "data" / "a.py").write_text("def f():\n    from tianshou_offline.data import b\n")
    (package / "data" / "b.py").write_text("from tianshou_offline.data.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", package)
    with pytest.raises(AssertionError, match="import cycle"):
        test_package_imports_downwards_without_cycles_and_never_a_script()


def write_atari_buffer(path: Path, size: int = 200) -> Path:
    rng = np.random.default_rng(0)
    with AtariBufferWriter(path, num_actions=6, task="PongNoFrameskip-v4", source="test") as writer:
        writer.append(
            frames=rng.integers(0, 256, (size, 84, 84), dtype=np.uint8),
            act=rng.integers(0, 6, size),
            rew=rng.normal(size=size).astype(np.float32),
            terminated=np.arange(size) % 50 == 49,
            truncated=np.zeros(size, bool),
        )
    return path


def test_copied_scripts_run_anywhere_the_package_is_installed(tmp_path, random_hopper):
    """d4rl_td3_bc.py and atari_il.py copied into an empty folder run there for a few steps."""
    folder = tmp_path / "my research"
    folder.mkdir()
    for script in ("examples/offline/d4rl_td3_bc.py", "examples/offline/atari_il.py"):
        shutil.copy(REPO_ROOT / script, folder)
    buffer = write_atari_buffer(tmp_path / "pong.hdf5")
    # no PYTHONPATH: only the installed package is importable besides the copied file
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", NUMBA_DISABLE_JIT="1")
    common = ["--epoch", "1", "--epoch-num-steps", "5", "--test-num", "1", "--device", "cpu"]
    runs = {
        "d4rl_td3_bc.py": ["--task", "Hopper-v2", "--expert-data-task", str(random_hopper),
                           "--hidden-sizes", "16", "16"],
        "atari_il.py": ["--task", "PongNoFrameskip-v4", "--load-buffer-name", str(buffer),
                        "--max-episode-steps", "30"],
    }  # fmt: skip
    for script, args in runs.items():
        result = subprocess.run(
            [sys.executable, script, *args, *common],
            cwd=folder, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, f"{script}:\n{result.stderr[-3000:]}"
        assert "final evaluation over 1 episodes" in result.stdout, result.stdout[-2000:]
    assert len(list((folder / "log").rglob("summary.json"))) == 2


def test_every_script_answers_help_from_any_directory(tmp_path):
    """Each script once, from the repository root, examples/offline or a folder elsewhere in turn:
    imports that depend on the working directory fail in all three (one run each keeps it fast)."""
    places = [REPO_ROOT, REPO_ROOT / "examples" / "offline", tmp_path]
    scripts = sorted((REPO_ROOT / "examples").rglob("*.py"))
    assert len(scripts) >= 13
    running = [
        (script, subprocess.Popen([sys.executable, str(script), "--help"], cwd=places[i % 3],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for i, script in enumerate(scripts)
    ]  # fmt: skip
    for script, process in running:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{script.name}: {err[-2000:]}"
        assert "usage:" in out, script.name
