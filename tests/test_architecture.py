"""The layering rules of docs/design.md, checked on the source: no import cycles, argparse only in commands/."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nnunet_synth

PACKAGE_ROOT = Path(nnunet_synth.__file__).parent
PACKAGE = "nnunet_synth"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of the package that ``path`` imports, at module level or inside functions.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module,
    else ``a.b``: importing a submodule is not a dependency on its package's
    ``__init__``, which Python runs for every submodule anyway.
    """
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module
            targets = [f"{parent}.{a.name}" if f"{parent}.{a.name}" in known else parent for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and graph["nnunet_synth.commands.fit"], "the walk found too little to mean anything"
    assert cycles(graph) == []


def test_argparse_lives_in_the_command_layer_only():
    outside = sorted(name for name, path in package_modules().items()
                     if not name.startswith(f"{PACKAGE}.commands")
                     and "argparse" in {n.split(".")[0] for n in _imports_of(path)})
    assert outside == []


def _imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_top_level_help_imports_no_command_module_and_no_torch():
    code = ("import sys; from nnunet_synth.commands.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('nnunet_synth.commands.') and "
            "m not in ('nnunet_synth.commands.main', 'nnunet_synth.commands.runner', 'nnunet_synth.commands.options'))\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'nnunetv2') if m in sys.modules)\n"
            "print('LOADED', loaded, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED [] []" in out, out


def test_a_command_imports_only_its_own_command_module():
    code = ("import sys; from nnunet_synth.commands.main import main\n"
            "try:\n    main(['expand', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('nnunet_synth.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert ("LOADED ['nnunet_synth.commands.expand', 'nnunet_synth.commands.main', 'nnunet_synth.commands.options', "
            "'nnunet_synth.commands.runner']") in out, out
