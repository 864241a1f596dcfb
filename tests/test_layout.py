"""The layout's promises, checked on the source: imports point one way (no cycles, lower layers
never import higher ones) and no module takes another module's private names."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dgl_rbgt"

# Lower index = lower layer. A module may import its own layer or any lower one (documented in
# docs/architecture.md). Every top-level part of the package must be listed.
LAYERS = [
    {"errors", "_checks", "conventions", "utils"},
    {"data"},
    {"nn", "transforms", "sampling"},
    {"models"},
    {"batching"},
    {"config"},
    {"train"},
    {"distributed"},
    {"cli", "__main__", "__init__", "registration"},
]


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name) for every ``from X import name`` and ``import X`` into the package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "dgl_rbgt" or target.startswith("dgl_rbgt."):
                found += [(target, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("dgl_rbgt.")]
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"dgl_rbgt.{part} is in no layer of tests/test_layout.py: place it")


def _edges() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        deps = set()
        for target, imported in _imports(name, path):
            full = f"{target}.{imported}"
            deps.add(full if full in MODULES else target)
        edges[name] = {d for d in deps if d in MODULES and d != name}
    return edges


def test_every_part_has_a_layer():
    for name in MODULES:
        _layer(_part(name))


def test_imports_point_down():
    wrong = []
    for name, deps in _edges().items():
        for dep in deps:
            if _layer(_part(dep)) > _layer(_part(name)):
                wrong.append(f"{name} imports {dep}")
    assert not wrong, "lower layers import higher ones:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = _edges()
    state, cycles = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in edges[u]:
            if u.startswith(v + "."):  # a package's own __init__ is not a dependency edge back
                continue
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in MODULES:
        if not state.get(m):
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_from_other_modules():
    private = []
    for name, path in MODULES.items():
        for target, imported in _imports(name, path):
            if (imported.startswith("_") and not imported.startswith("__") and target != name
                    and f"{target}.{imported}" not in MODULES):
                private.append(f"{name} takes {imported} from {target}")
    assert not private, "\n".join(private)


@pytest.mark.parametrize("module", ["dgl_rbgt.config", "dgl_rbgt.cli"])
def test_reading_recipes_needs_no_model_imports(module):
    """The CLI and recipe parsing start without torch (the registry loads when the schema is built)."""
    import subprocess
    import sys

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_registered_layer_names_match_the_layers():
    import dgl

    from dgl_rbgt import nn, registration

    assert set(registration.LAYER_NAMES) == set(nn.LAYERS)
    assert all(getattr(dgl.nn, name) is cls for name, cls in nn.LAYERS.items())
