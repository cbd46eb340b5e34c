"""The backend's layers, read from its imports: errors and units at the bottom, head models, the
numerics as a library, the job adapters, the service on top; the CLI, datasets and evaluation
use the library, never a job handler. No import circles, no private name taken from another
package."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "backend" / "src" / "headcraft_backend"

# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    ("base", ("__init__", "errors", "units", "limits", "wire", "cache", "compute", "assets")),
    ("head", ("head.",)),
    ("library", ("fit.", "layout.", "generate.", "animate.", "procedural.")),
    ("jobs", ("handlers", "fit.jobs", "layout.jobs", "generate.jobs", "animate.jobs", "head.jobs",
              "diagnostics")),
    ("service", ("service.",)),
    ("tools", ("cli", "__main__", "dataset.", "evaluate.")),
]
JOB_MODULES = LAYERS[3][1]


def layer(module: str) -> int:
    """Index into LAYERS: the most specific (longest) prefix wins."""
    best, rank = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module == p.rstrip(".") or (p.endswith(".") and module.startswith(p))) \
                    and len(p) > rank:
                best, rank = i, len(p)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        out[name] = p
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, str]]:
    """(imported module, imported name) pairs of one module, package-relative names."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("headcraft_backend"):
                target = node.module.removeprefix("headcraft_backend").lstrip(".")
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}".lstrip(".")
                found.append((full, "") if full in known else (target or "__init__", alias.name))
    return found


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return known, {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer(graph):
    for name in graph[0]:
        layer(name)


def test_imports_only_go_down(graph):
    known, edges = graph
    wrong = [f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
             for a, targets in edges.items() for b, _ in targets if b in known and layer(b) > layer(a)]
    assert not wrong, "\n".join(wrong)


def test_tools_use_the_library_not_the_job_handlers(graph):
    known, edges = graph
    wrong = [f"{a} imports {b}" for a, targets in edges.items() if LAYERS[layer(a)][0] == "tools"
             for b, _ in targets if b in JOB_MODULES]
    assert not wrong, "\n".join(wrong)


def test_no_import_circles(graph):
    known, edges = graph
    succ = {a: {b for b, _ in t if b in known and b != a} for a, t in edges.items()}
    state: dict[str, int] = {}

    def visit(v, path):
        state[v] = 1
        for w in succ[v]:
            if state.get(w) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(w):] + [w]))
            if w not in state:
                visit(w, path + [w])
        state[v] = 2
    for v in succ:
        if v not in state:
            visit(v, [v])


def test_no_private_names_from_other_packages(graph):
    known, edges = graph
    top = lambda m: m.split(".")[0]  # noqa: E731
    wrong = [f"{a} takes {b}.{n}" for a, targets in edges.items() for b, n in targets
             if n.startswith("_") and not n.startswith("__") and top(b) != top(a)]
    assert not wrong, "\n".join(wrong)
