"""The backend's layers read from its imports (tests/backend/test_architecture.py checks them),
and their picture: `python tools/architecture.py` writes docs/images/architecture.png."""
from __future__ import annotations

import ast
import collections
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "backend" / "src" / "headcraft_backend"

# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    ("base", ("__init__", "errors", "units", "presets", "limits", "wire", "cache", "compute", "raster", "assets")),
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


def layer_edges() -> dict[tuple[int, int], int]:
    """(importing layer, imported layer) -> number of module imports."""
    known = modules()
    count: dict[tuple[int, int], int] = collections.Counter()
    for name, path in known.items():
        for target in {b for b, _ in imports(name, path, known) if b in known and b != name}:
            count[layer(name), layer(target)] += 1
    return dict(count)


def draw(path: Path) -> None:
    """Each layer a band listing its modules by folder, top layer first; the arrows on the left
    run from a layer to each lower layer it imports, and each band says how many imports leave it."""
    from PIL import Image, ImageDraw
    known = modules()
    groups: dict[int, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for name in sorted(known):
        parts = name.split(".")
        is_pkg = len(parts) > 1 or (known[name].name == "__init__.py" and name != "__init__")
        folder = parts[0] + "/" if is_pkg else name + ".py"
        if len(parts) > 1:
            groups[layer(name)][folder].append(parts[-1])
        else:
            groups[layer(name)].setdefault(folder, [])
    edges = layer_edges()
    W, band, gap, left = 1200, 74, 26, 140
    H = len(LAYERS) * (band + gap) + gap + 10
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    y_of = {}
    for row, i in enumerate(reversed(range(len(LAYERS)))):
        y = gap + row * (band + gap)
        y_of[i] = y
        d.rectangle([left, y, W - 20, y + band], outline=(60, 60, 60), fill=(235, 242, 250))
        down = sum(n for (a, b), n in edges.items() if a == i and b < i)
        d.text((left + 10, y + 6), f"{LAYERS[i][0]}  ({down} imports into lower layers)", fill=(0, 0, 0))
        items = [f + (f" ({', '.join(m)})" if m else "") for f, m in groups[i].items()]
        line, lines = "", []
        for item in items:
            if line and len(line) + len(item) > 165:
                lines.append(line)
                line = ""
            line += item + "    "
        lines.append(line)
        for k, text in enumerate(lines[:3]):
            d.text((left + 10, y + 24 + 14 * k), text, fill=(40, 40, 90))
    pairs = sorted((a, b) for (a, b) in edges if b < a)
    for k, (a, b) in enumerate(sorted(pairs, key=lambda e: (e[0] - e[1], -e[0]))):
        x = 16 + 10 * k
        y0, y1 = y_of[a] + band // 2, y_of[b] + band // 2
        d.line([x, y0, x, y1], fill=(110, 110, 110), width=2)
        d.line([x, y0, left, y0], fill=(190, 190, 190), width=1)
        d.polygon([(x - 4, y1 - 8), (x + 4, y1 - 8), (x, y1)], fill=(110, 110, 110))
    d.text((left, H - 24), "headcraft_backend, lowest layer at the bottom: every import points down or stays "
                          "in its layer (drawn from the code by tools/architecture.py)", fill=(0, 0, 0))
    img.save(path)


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "images" / "architecture.png"
    draw(out)
    print(f"wrote {out}")
