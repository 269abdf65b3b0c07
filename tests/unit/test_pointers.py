"""Docs and docstrings cannot point at what does not exist: every file path, every ``digits.``/``services.``/
``bench.``/``tests.`` module and every test (``file.py::test_name``) they name is there."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("digits", "services", "bench", "tests", "docs", "deploy", "protos", "tools")
# A path into the tree: a known top folder, then path characters, ending in a file name with an extension or "/".
PATH = re.compile(rf"(?<![\w./-])((?:{'|'.join(ROOTS)})/[\w./-]*\w(?:\.\w+|/))")
MODULE = re.compile(r"(?<![\w.])((?:digits|services|bench|tests)(?:\.[a-z_][a-z0-9_]*)+)")
GENERATED = ("digits/v1", "digits/oip")  # written by `make protos`, not committed
IGNORED_SUFFIXES = (".log", ".json", ".png", ".acl", ".env", ".tmp")
FILE_SUFFIXES = (".json", ".yaml", ".yml", ".py", ".md", ".png", ".egg")  # digits.json is a file, not a module
# A test: its file (a path, or in a suite's own table the bare file name, found under tests/), then "::" and the
# names in it, parametrized ids aside: `tests/unit/test_x.py::test_y`, `test_x.py::test_y[an id]`, `test_x.py::C::f`.
TEST_ID = r"(?:\[[^\]`\n]*\])?"
TEST_POINTER = re.compile(rf"(?<![\w./-])((?:(?:{'|'.join(ROOTS)})/[\w./-]*/)?test_\w+\.py)((?:::\w+{TEST_ID})+)")
# "`file.py::test_y`, `test_z`": more tests of the same file, listed after it.
SAME_FILE = re.compile(rf"`(?:,\s*|\s+and\s+)`(test_\w+){TEST_ID}`")


def prose(path: Path) -> str:
    """What people read in a file: all of a Markdown or YAML file; a Python file's docstrings and comments."""
    text = path.read_text(errors="replace")
    if path.suffix != ".py":
        return text
    tree = ast.parse(text)
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))]
    docstrings = [ast.get_docstring(node) or "" for node in nodes]
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
    return "\n".join(docstrings + comments)


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml", "*.yml", "Makefile"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    return [REPO / name for name in names if (REPO / name).is_file()]


def module_exists(name: str) -> bool:
    """``digits.platform.registry`` and ``digits.platform.registry.Registry`` exist; ``digits.grpc_errors`` does not."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        path = REPO.joinpath(*parts[:cut])
        source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        if not source.is_file():
            continue
        if cut == len(parts):
            return True
        attribute = re.escape(parts[cut])  # the first name after the module must be defined or imported there
        pattern = (rf"^\s*(?:async\s+)?(?:class|def)\s+{attribute}\b|^\s*{attribute}\s*[:=]"
                   rf"|^\s*from .* import .*\b{attribute}\b")
        return re.search(pattern, source.read_text(), re.M) is not None
    return False


def defined_names(path: Path) -> set[str]:
    """Every function and class a Python file defines, at any depth."""
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}


def pointed_files(name: str) -> list[Path]:
    """The file a test pointer names: a path from the repository's root, or a bare name found under tests/."""
    if "/" in name:
        return [REPO / name] if (REPO / name).is_file() else []
    return sorted((REPO / "tests").rglob(name))


def dangling_tests(text: str) -> list[str]:
    """``file.py::name`` pointers whose file does not define the name (or does not exist)."""
    missing = []
    for found in TEST_POINTER.finditer(text):
        file, names = found.group(1), [re.sub(r"\[.*", "", n) for n in found.group(2).split("::")[1:]]
        end = found.end()
        while more := SAME_FILE.match(text, end):
            names.append(more.group(1))
            end = more.end() - 1  # at its closing backtick, where the next one may follow
        files = pointed_files(file)
        missing += [f"{file}::{name}" for name in names
                    if not any(name in defined_names(path) for path in files)]
    return missing


def dangling(text: str) -> list[str]:
    missing = dangling_tests(text)
    for found in PATH.findall(text):
        path = found.rstrip("/.")
        if path.startswith(GENERATED) or path.endswith(IGNORED_SUFFIXES) or "*" in path:
            continue
        if not (REPO / path).exists():
            missing.append(found)
    for found in MODULE.findall(text):
        if found.startswith(tuple(g.replace("/", ".") for g in GENERATED)) or found.endswith(FILE_SUFFIXES):
            continue
        if not module_exists(found):
            missing.append(found)
    return missing


def test_every_pointer_in_docs_and_docstrings_names_something_that_exists() -> None:
    problems = {str(path.relative_to(REPO)): found for path in tracked_text_files()
                if path.name != "test_pointers.py" and (found := dangling(prose(path)))}
    assert not problems, f"pointers to files or modules that do not exist: {problems}"


def test_the_development_guide_names_the_files_of_each_step() -> None:
    """docs/development.md is a list of files to touch: the check above covers it only while it names them as paths."""
    named = set(PATH.findall((REPO / "docs" / "development.md").read_text()))
    assert len(named) >= 30, sorted(named)
    assert {"digits/training/recipes.py", "digits/modelling/storage.py", "digits/client/calls.py",
            "digits/settings.py", "tests/faults/load.py"} <= named


def test_the_check_finds_what_the_old_tree_got_wrong() -> None:
    assert dangling("errors map to status codes in one place (``digits.grpc_errors``)") == ["digits.grpc_errors"]
    assert dangling("the contracts in docs/DESIGN.md") == ["docs/DESIGN.md"]
    assert dangling("see digits/platform/registry.py and docs/architecture.md") == []
    # A test that moved to another file, and one renamed: the file alone is no proof.
    moved = "`tests/unit/test_stack_compose.py::test_each_service_gets_only_its_own_secrets`"
    assert dangling(moved) == [moved.strip("`")]
    assert dangling(moved.replace("compose", "local")) == []
    listed = "`test_serving.py::test_hot_swap_under_load`, `test_replica_loss_under_load` and `test_hot_swap`"
    assert dangling(listed) == ["test_serving.py::test_hot_swap"]
    assert dangling("`test_pointers.py::test_the_check_finds_what_the_old_tree_got_wrong[an id]`") == []
    assert dangling("`test_pointers.py::test_the_check_finds_what_the_old_tree_got_wrong[id]`, `test_gone`") == [
        "test_pointers.py::test_gone"]
    assert dangling("`test_nowhere.py::test_x`") == ["test_nowhere.py::test_x"]


def folders_in_the_readme_table() -> set[str]:
    """The folders and files the README's folder table names in its first column."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("| folder or file | what it holds |"):].split("\n\n", 1)[0]
    named: set[str] = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        named.update(name.rstrip("/") for name in re.findall(r"`([^`]+)`", first_cell))
    return named


def test_the_readme_folder_table_shows_the_whole_tree() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folders = {"/".join(Path(f).parts[:depth]) for f in tracked for depth in (1, 2)
               if len(Path(f).parts) > depth and Path(f).parts[0] in ("digits", "services", "tests", "protos")}
    folders |= {Path(f).parts[0] for f in tracked if len(Path(f).parts) > 1 and not f.startswith(".")}
    folders -= {"protos/digits"}  # shown by its two subfolders
    named = folders_in_the_readme_table()
    missing = sorted(f for f in folders if f not in named and not any(n.startswith(f + "/") for n in named))
    assert not missing, f"the README's folder table does not name {missing}"
