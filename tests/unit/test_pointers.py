"""Docs and docstrings cannot point at what does not exist: every file path and every ``digits.``/``services.``/
``bench.``/``tests.`` module they name is there."""

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


def dangling(text: str) -> list[str]:
    missing = []
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


def test_the_check_finds_what_the_old_tree_got_wrong() -> None:
    assert dangling("errors map to status codes in one place (``digits.grpc_errors``)") == ["digits.grpc_errors"]
    assert dangling("the contracts in docs/DESIGN.md") == ["docs/DESIGN.md"]
    assert dangling("see digits/platform/registry.py and docs/architecture.md") == []


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
