"""The example scripts as modules, for the tests that call their functions in-process.

A script is not part of the package: it is loaded from its file, as ``python3 <script>`` would
run it, once per test session.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

from tianshou.algorithm.algorithm_base import Algorithm

from tianshou_offline.run.d4rl import EnvSpec, make_env_spec
from tianshou_offline.run.evaluation import seed_everything

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = (REPO_ROOT / "examples" / "offline", REPO_ROOT / "examples" / "atari")
_loaded: dict[str, ModuleType] = {}


def script_path(name: str) -> Path:
    for folder in SCRIPT_DIRS:
        if (folder / f"{name}.py").is_file():
            return folder / f"{name}.py"
    raise FileNotFoundError(f"no example script {name}.py in {SCRIPT_DIRS}")


def load_script(name: str) -> ModuleType:
    """``examples/.../<name>.py`` as a module (its ``__main__`` block does not run)."""
    if name not in _loaded:
        spec = importlib.util.spec_from_file_location(f"example_{name}", script_path(name))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def build_d4rl_algorithm(
    name: str, argv: list[str]
) -> tuple[Algorithm, argparse.Namespace, EnvSpec]:
    """What ``<name>.main(argv)`` trains, built as it builds it (same seed, same networks)."""
    script = load_script(name)
    args = script.get_args(argv)
    seed_everything(args.seed)
    spec = make_env_spec(args.task)
    return script.build_algorithm(args, spec), args, spec
