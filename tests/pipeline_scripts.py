"""Files the tests load by path: pipeline scripts (pipelines/ is not a package and holds more than one run.py)
and the packages' test factories."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str, relative_path: str, *, register: bool = False) -> ModuleType:
    """The module at REPO/`relative_path`, under `name`; `register` puts it in sys.modules first, for scripts
    whose dataclasses (or imports by name) look their module up there."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
