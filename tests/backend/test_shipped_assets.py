"""Shipped files carry no absolute paths of the machine that made them."""
import json
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

import headcraft_backend.assets as assets_pkg
from headcraft_backend.generate.train import portable_path

ASSETS = Path(assets_pkg.__file__).parent
# an absolute POSIX path of two or more parts, a home-relative one, or a Windows drive path
PATH_IN_TEXT = re.compile(r"(?:^|[\s`'\"(=:])(?:~?/[\w.-]+/[\w./-]+|[A-Za-z]:[\\/][\w. -]+[\\/])")


def _absolute(s: str) -> bool:
    return PurePosixPath(s).is_absolute() or bool(PureWindowsPath(s).drive) or s.startswith("~/")


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def shipped_text_files():
    return sorted(p for p in ASSETS.iterdir() if p.suffix in (".json", ".md"))


def test_there_are_shipped_text_files():
    names = {p.name for p in shipped_text_files()}
    assert {"demo_generator.json", "MODEL_CARD.md"} <= names


@pytest.mark.parametrize("path", shipped_text_files(), ids=lambda p: p.name)
def test_no_absolute_paths_in_shipped_assets(path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        bad = [s for s in _strings(json.loads(text)) if _absolute(s)]
        assert not bad, f"{path.name} holds absolute paths: {bad}"
    hits = [m.group(0).strip() for m in PATH_IN_TEXT.finditer(text)]
    assert not hits, f"{path.name} holds absolute paths: {hits}"


def test_the_checks_catch_absolute_paths():
    assert _absolute("/work/main/out/demo_model/maps") and _absolute("C:\\data\\maps")
    assert not _absolute("out/demo_model/maps")
    assert PATH_IN_TEXT.search('"data": "/work/main/out/maps"')
    assert PATH_IN_TEXT.search("trained on C:\\Users\\me\\maps")
    assert not PATH_IN_TEXT.search("MMD-CD (mm^2) and lr G/D 0.002/0.001, 64^2 maps in out/demo_model/maps")


def test_training_records_a_portable_data_path(tmp_path, monkeypatch):
    (tmp_path / "out" / "maps").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "out" / "maps") == "out/maps"
    assert portable_path("out/maps") == "out/maps"
    elsewhere = tmp_path.parent / "elsewhere-maps"
    assert portable_path(elsewhere) == "elsewhere-maps"
