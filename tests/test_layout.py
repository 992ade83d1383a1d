"""The library's import graph: one-way layers (``rocktokens.LAYERS``, stated in the package docstring) and public
names only. Read from the source with ``ast``; nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rocktokens

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "rocktokens"


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = REPO):
    """(line, imported module, imported names) for every rocktokens import in ``path``; relative imports resolved."""
    mod = _module_name(path, root)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "rocktokens" or target.startswith("rocktokens."):
                yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rocktokens"):
                    yield node.lineno, a.name, []


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _library_files():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_subpackage_has_a_layer_and_the_docstring_states_them():
    found = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(rocktokens.LAYERS), found ^ set(rocktokens.LAYERS)
    assert not [p.name for p in PKG.glob("*.py") if p.name != "__init__.py"], "flat modules at the top level"
    for name in rocktokens.LAYERS:
        assert name in rocktokens.__doc__, f"the package docstring does not place {name}"


def _upward(paths, root: Path = REPO) -> list[str]:
    """Imports from a subpackage later in ``rocktokens.LAYERS`` than the importing module's own."""
    rank = {name: i for i, name in enumerate(rocktokens.LAYERS)}
    upward = []
    for path in paths:
        own = _subpackage(_module_name(path, root))
        if own is None:
            continue
        for line, target, names in _imports(path, root):
            other = _subpackage(target)
            if other is None:  # `from rocktokens import x`: the subpackage is the name itself
                upward += [f"{path.relative_to(root)}:{line} imports rocktokens.{n}" for n in names
                           if n in rank and rank[n] > rank[own]]
            elif rank[other] > rank[own]:
                upward.append(f"{path.relative_to(root)}:{line} ({own}) imports {target} ({other})")
    return upward


def test_no_module_imports_from_a_later_layer():
    upward = _upward(_library_files())
    assert not upward, "imports up a layer:\n" + "\n".join(upward)


def _private_uses(path: Path, root: Path = REPO) -> list[str]:
    """Private names imported from, or read off, another rocktokens module."""
    mod = _module_name(path, root)
    tree = ast.parse(path.read_text(), str(path))
    bad, aliases = [], set()
    for line, target, names in _imports(path, root):
        if target == mod:
            continue
        bad += [f"{path.relative_to(root)}:{line} imports {target}.{n}" for n in names
                if n.startswith("_") and not n.startswith("__")]
    for node in ast.walk(tree):  # `from rocktokens.x import y as m` / `import rocktokens.x as m`, then m._private
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            src = getattr(node, "module", None) or ""
            for a in node.names:
                full = a.name if isinstance(node, ast.Import) else f"{src}.{a.name}"
                if full.startswith("rocktokens") and (root / (full.replace(".", "/") + ".py")).exists():
                    aliases.add(a.asname or a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{path.relative_to(root)}:{node.lineno} reads {node.value.id}.{node.attr}")
    return bad


@pytest.mark.parametrize("where", ["rocktokens", "workflow_scripts", "benchmarks"])
def test_no_private_name_crosses_a_module(where):
    bad = [b for p in sorted((REPO / where).rglob("*.py")) if "__pycache__" not in p.parts for b in _private_uses(p)]
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    """Both checks flag an upward import, a private import and a private attribute read when they are there."""
    (tmp_path / "rocktokens" / "core").mkdir(parents=True)
    (tmp_path / "rocktokens" / "tokens").mkdir()
    (tmp_path / "rocktokens" / "tokens" / "kl.py").write_text("")
    bad = tmp_path / "rocktokens" / "core" / "bad.py"
    bad.write_text("from rocktokens.report.summary import write_summary\n"
                   "from rocktokens.tokens.kl import _rows\n"
                   "from rocktokens.tokens import kl as K\n"
                   "K._streamed_columns\n")
    up = _upward([bad], tmp_path)
    assert up[0] == "rocktokens/core/bad.py:1 (core) imports rocktokens.report.summary (report)" and len(up) == 3, up
    private = _private_uses(bad, tmp_path)
    assert any("kl._rows" in b for b in private) and any("K._streamed_columns" in b for b in private), private
