"""Generate the Python code of protos/ into OUT (default: the repository): digits/v1 (Digits' own API) and
digits/oip (the Open Inference Protocol), with type stubs.

One generator for `make protos` (in place, for development) and for setup.py (into the build directory, so
that a wheel carries the code that git does not). Needs grpcio-tools; the stubs come from mypy-protobuf when it
is installed (typed gRPC stubs too), else from protoc's own `--pyi_out`.

    python protos/generate.py [OUT]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
PACKAGES = ("digits/v1", "digits/oip")


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for package in PACKAGES for p in (PROTOS / package).glob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            f"--python_out={out}", f"--grpc_python_out={out}", *_stub_options(out), *sources]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(sources)}")
    written = []
    for package in PACKAGES:
        init = out / package / "__init__.py"
        init.touch()
        written += sorted((out / package).iterdir())
    return [p for p in written if p.is_file()]


def _stub_options(out: Path) -> list[str]:
    # The plugins sit next to the interpreter (a venv's bin/) or on PATH.
    scripts = Path(sys.executable).parent
    mypy = shutil.which("protoc-gen-mypy", path=scripts) or shutil.which("protoc-gen-mypy")
    mypy_grpc = shutil.which("protoc-gen-mypy_grpc", path=scripts) or shutil.which("protoc-gen-mypy_grpc")
    if mypy and mypy_grpc:
        return [f"--plugin=protoc-gen-mypy={mypy}", f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
                f"--mypy_out={out}", f"--mypy_grpc_out={out}"]
    return [f"--pyi_out={out}"]


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTOS.parent)
