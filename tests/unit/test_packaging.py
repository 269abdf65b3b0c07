"""The package installs anywhere: a hashed lock of PyPI packages only, and a wheel that carries its generated code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPI = "https://pypi.org/simple"


def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(requirements: list[object]) -> dict[str, str]:
    """name -> version of `name==version` entries (include-group tables are skipped)."""
    found = {}
    for requirement in requirements:
        if isinstance(requirement, str):
            name, _, version = requirement.partition("==")
            found[_normal(name)] = version
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_direct_dependency_is_pinned_and_locked_at_its_pin() -> None:
    project = pyproject()
    meta = project["project"]
    assert isinstance(meta, dict)
    groups = project["dependency-groups"]
    assert isinstance(groups, dict)
    extras = meta["optional-dependencies"].values()
    direct: list[object] = [*meta["dependencies"], *(r for extra in extras for r in extra),
                            *(r for group in groups.values() for r in group)]
    wanted = pins(direct)
    assert all(version for version in wanted.values()), f"unpinned: {[n for n, v in wanted.items() if not v]}"
    assert wanted["cryptography"] and "cryptography" in pins(meta["dependencies"])
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    assert {name: locked.get(name) for name in wanted} == wanted


def test_the_lock_holds_only_pypi_packages_with_hashes() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for package in lock["package"]:
        if package["name"] == "digits":
            assert package["source"] == {"editable": "."}
            continue
        assert package["source"] == {"registry": PYPI}, package["name"]
        files = [package["sdist"]] if "sdist" in package else []
        files += package.get("wheels", [])
        assert files and all(f["hash"].startswith("sha256:") for f in files), package["name"]
        assert all(f["url"].startswith("https://files.pythonhosted.org/") for f in files), package["name"]


def test_the_conformance_lock_and_the_uv_bootstrap_are_hashed_and_carry_no_sources() -> None:
    for path in (REPO / "tests/conformance/requirements.lock", REPO / "tools/bootstrap-uv.txt"):
        lines = [line.strip() for line in path.read_text().replace("\\\n", " ").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        assert entries, path
        for entry in entries:
            # Options such as --index-url or --find-links would be this machine's, not the user's.
            assert re.match(r"[A-Za-z0-9][\w.\-]*(\[[\w,]+\])?==\S+ ", entry), f"{path.name}: {entry[:80]}"
            assert "--hash=sha256:" in entry and "file:" not in entry, f"{path.name}: {entry[:80]}"


def test_the_bootstrapped_uv_is_the_one_the_project_requires() -> None:
    required = pyproject()["tool"]["uv"]["required-version"]  # type: ignore[index]
    bootstrap = re.search(r"^uv==(\S+)", (REPO / "tools/bootstrap-uv.txt").read_text(), re.MULTILINE)
    assert bootstrap and required == f"=={bootstrap[1]}"


def _sources(directory: str, names: list[str]) -> set[str]:
    """What a fresh clone would not have: caches and the code `make protos` generated here."""
    generated = {"v1", "oip"} if Path(directory) == REPO / "digits" else set()
    return {n for n in names if n == "__pycache__" or n in generated}


def test_a_wheel_built_from_the_sources_carries_the_generated_code_and_imports(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("protos", "digits", "services"):
        shutil.copytree(REPO / name, source / name, ignore=_sources)
    assert not (source / "digits" / "v1").exists()

    # No isolation: the build requirements (setuptools, grpcio-tools) come from the dev venv, not the network.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False, cwd=source,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("digits-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert {"digits/v1/__init__.py", "digits/v1/recognizer_pb2.py", "digits/v1/recognizer_pb2_grpc.py",
            "digits/v1/models_pb2.py", "digits/v1/training_pb2.py", "digits/oip/__init__.py",
            "digits/oip/grpc_predict_v2_pb2.py", "services/gateway/static/index.html"} <= names
    assert not any(n.startswith(("tests/", "bench/", "protos/")) for n in names)

    script = "import digits.v1.recognizer_pb2_grpc as m, digits.oip.grpc_predict_v2_pb2; print(m.__file__)"
    imported = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(tmp_path / "site")
