"""Everything about the package is in pyproject.toml; this file only adds a build step: the gRPC code of
protos/ (digits/v1, digits/oip), which git does not hold, is generated into the wheel (protos/generate.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_digits_protos", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithProtos(build_py):
    """build_py, plus the generated modules: into the build directory, or in place for an editable install."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            _generator().generate(ROOT)
        else:
            self._generated = [str(p) for p in _generator().generate(Path(self.build_lib))]

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *getattr(self, "_generated", [])]


setup(cmdclass={"build_py": BuildPyWithProtos})
