"""The backend's layers, read from its imports: errors and units at the bottom, head models, the
numerics as a library, the job adapters, the service on top; the CLI, datasets and evaluation
use the library, never a job handler. No import circles, no private name taken from another
package."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from architecture import JOB_MODULES, LAYERS, imports, layer, modules  # noqa: E402

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
