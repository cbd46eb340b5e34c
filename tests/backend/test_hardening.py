"""Issue 18: hostile peers and broken files get a clear refusal, bounded memory, nothing outside
their folder. Every hostile input is built here, in tmp_path; servers listen on 127.0.0.1."""
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from headcraft_backend import limits, wire
from headcraft_backend.cache import BoundedCache, write_atomic
from headcraft_backend.errors import HeadModelError
from headcraft_backend.errors import UserError
from headcraft_backend.service.server import Server

TOKEN = "hardening-token"


# -- an in-process server ------------------------------------------------------------------
@pytest.fixture
def server():
    s = Server(TOKEN, device="cpu", handshake_seconds=1.0, max_connections=4)
    t = threading.Thread(target=s.serve_forever, kwargs={"ready": lambda line: None}, daemon=True)
    t.start()
    yield s
    s.stop()
    t.join(5)


def connect(port, login=True) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if login:
        wire.send(s, "hello", {"protocol": wire.PROTOCOL_VERSION, "token": TOKEN})
        assert wire.recv(s).type == "welcome"
    return s


def raw_frame(head: bytes, payload_len: int = 0) -> bytes:
    return wire.PREFIX.pack(wire.MAGIC, len(head), payload_len) + head


def refused(s) -> str:
    """The error frame a hostile frame gets, then the connection closes."""
    msg = wire.recv(s)
    assert msg.type == "error", msg
    with pytest.raises(wire.ConnectionClosed):
        wire.recv(s)
    s.close()
    return msg.fields["message"]


def still_serving(port):
    s = connect(port)
    wire.send(s, "ping", {})
    assert wire.recv(s).type == "pong"
    s.close()


# -- 1, 2: headers -------------------------------------------------------------------------
def test_deep_json_header_gets_an_error_frame_before_and_after_login(server):
    deep = b'{"type":"ping","x":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    for login in (False, True):
        s = connect(server.port, login)
        s.sendall(raw_frame(deep))
        assert "nests 200001 deep" in refused(s)
    still_serving(server.port)


def test_header_depth_counts_brackets_outside_strings_only():
    ok = {"type": "x", "s": "[[[{{{" * 1000 + '\\"[[[', "d": [[[[1]]]]}
    assert wire.parse_header(json.dumps(ok).encode()) == ok
    assert wire.json_depth(json.dumps({"a": [[[]]]}).encode()) == 4
    limit = limits.MAX_HEADER_DEPTH
    wire.parse_header(b'{"type":"x","v":' + b"[" * (limit - 1) + b"]" * (limit - 1) + b"}")
    with pytest.raises(wire.ProtocolError, match="nests"):
        wire.parse_header(b'{"type":"x","v":' + b"[" * limit + b"]" * limit + b"}")


@pytest.mark.parametrize("text", [b'{"type":"x","v":NaN}', b'{"type":"x","v":Infinity}',
                                  b'{"type":"x","v":[-Infinity]}', b'{"type":"x","v":1e999}',
                                  b'{"type":"x","v":' + b"1" * 5000 + b"}", b'{"type":"x",'])
def test_nan_infinity_and_broken_json_refused(text):
    with pytest.raises(wire.ProtocolError):
        wire.parse_header(text)


BAD_DESCRIPTORS = [
    {"name": "a", "dtype": "<f4", "shape": [0, 1e30], "offset": 0, "nbytes": 0},
    {"name": "a", "dtype": "<f4", "shape": [0, 2 ** 40], "offset": 0, "nbytes": 0},
    {"name": "a", "dtype": "<f4", "shape": [1] * 33, "offset": 0, "nbytes": 4},
    {"name": "a", "dtype": "<f4", "shape": [float("inf")], "offset": 0, "nbytes": 4},
    {"name": "a", "dtype": ["<f4"], "shape": [1], "offset": 0, "nbytes": 4},
    {"name": {"n": 1}, "dtype": "<f4", "shape": [1], "offset": 0, "nbytes": 4},
    {"name": "a", "dtype": "<f4", "shape": [True], "offset": 0, "nbytes": 4},
    {"name": "a", "dtype": "<f4", "shape": "1", "offset": 0, "nbytes": 4},
    {"name": "a", "dtype": "<f4", "shape": [1], "offset": 0.0, "nbytes": 4},
    {"name": "a", "dtype": "<f4", "shape": [1], "offset": 0},
    ["a", "<f4", [1], 0, 4],
]


@pytest.mark.parametrize("desc", BAD_DESCRIPTORS)
def test_malformed_descriptors_raise_the_protocol_error(desc):
    with pytest.raises(wire.ProtocolError):
        wire.decode({"type": "x", "arrays": [desc]}, bytearray(8))


def test_malformed_frames_and_job_names_get_the_protocol_error_frame(server):
    for fields in ({"kind": ["diagnostics.echo"]}, {"kind": {"k": 1}}, {"kind": "diagnostics.echo", "params": [1]},
                   {"kind": "diagnostics.echo", "job_id": {"id": 1}}):
        s = connect(server.port)
        wire.send(s, "submit", fields)
        assert "submit needs" in refused(s)
    for desc in BAD_DESCRIPTORS[:6]:
        s = connect(server.port)
        s.sendall(raw_frame(json.dumps({"type": "submit", "arrays": [desc]}).encode(), 8) + bytes(8))
        msg = wire.recv(s)
        assert msg.type == "error" and msg.fields["error_type"] == "ProtocolError"
        s.close()
    still_serving(server.port)


# -- 3: handshake deadline and connection cap ----------------------------------------------
def test_handshake_deadline_covers_the_whole_hello(server):
    hello = b"".join(wire.encode("hello", {"protocol": 1, "token": TOKEN}))
    s = connect(server.port, login=False)
    start = time.monotonic()
    for i in range(len(hello)):      # one byte every 0.3 s: each read is quick, the whole is not
        readable, _, _ = select.select([s], [], [], 0.3)
        if readable:
            break
        s.sendall(hello[i:i + 1])
    assert "no handshake within 1 s" in refused(s)
    assert time.monotonic() - start < 3.0


def test_open_connections_are_capped(server):
    held = [connect(server.port) for _ in range(server.max_connections)]
    extra = connect(server.port, login=False)
    msg = wire.recv(extra)
    assert msg.type == "error" and msg.fields["error_type"] == "TooManyConnections"
    extra.close()
    held.pop().close()
    deadline = time.monotonic() + 5
    while True:      # the closed one's thread ends, then a newcomer is served
        try:
            still_serving(server.port)
            break
        except (AssertionError, wire.ProtocolError, OSError):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    for s in held:
        s.close()


def test_waiting_jobs_are_capped(server):
    s = connect(server.port)
    wire.send(s, "submit", {"job_id": "long", "kind": "diagnostics.selftest", "params": {"seconds": 30}})
    for i in range(limits.MAX_QUEUED_JOBS):
        wire.send(s, "submit", {"job_id": f"j{i}", "kind": "diagnostics.echo", "params": {}})
    seen = {}
    while len(seen) < limits.MAX_QUEUED_JOBS + 1:
        msg = wire.recv(s)
        if msg.type in ("accepted", "error"):
            seen[msg.fields["job_id"]] = msg.fields.get("error_type", msg.type)
    assert list(seen.values()).count("accepted") == limits.MAX_QUEUED_JOBS
    assert seen[f"j{limits.MAX_QUEUED_JOBS - 1}"] == "QueueFull"
    s.close()                                      # its jobs are cancelled


# -- 4: payloads are stored as they arrive ---------------------------------------------------
def test_payload_is_not_allocated_from_its_claimed_size():
    a, b = socket.socketpair()
    head = json.dumps({"type": "submit", "arrays": []}).encode()
    claim = 512 << 20

    def send():
        a.sendall(raw_frame(head, claim) + bytes(1 << 20))     # 1 MiB of the claimed 512
        a.close()
    tracemalloc.start()
    try:
        threading.Thread(target=send).start()
        with pytest.raises(wire.ConnectionClosed, match=f"after {1 << 20} of {claim}"):
            wire.recv(b, max_payload=1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        b.close()
    assert peak < 4 * limits.RECV_CHUNK_BYTES, peak


# -- 5: caches ---------------------------------------------------------------------------------
def test_bounded_cache_drops_least_recently_used_by_entries_and_bytes():
    c = BoundedCache(max_entries=3, max_bytes=10_000)
    for k in "abc":
        c[k] = np.zeros(250, np.float64)          # 2000 bytes each
    c.get("a")                                    # a is now the most recent
    c["d"] = np.zeros(250)
    assert list(c) == ["c", "a", "d"] and c.nbytes == 6000
    c["e"] = (np.zeros(500), {"x": np.zeros(250)})     # 6000 bytes: c goes (4 entries, 12000 bytes)
    assert list(c) == ["a", "d", "e"] and c.nbytes == 10_000
    c["f"] = np.zeros(500)                        # 4000 bytes: a and d go
    assert list(c) == ["e", "f"] and c.nbytes == 10_000
    c["huge"] = np.zeros(2000)                    # larger than the whole cache: not kept
    assert "huge" not in c and c.nbytes == 10_000
    c.clear()
    assert len(c) == 0 and c.nbytes == 0


def _ctx():
    return SimpleNamespace(cache=BoundedCache(), device=torch.device("cpu"), progress=lambda *a, **k: None)


def test_a_resaved_generator_replaces_its_cache_entry(tmp_path):
    from headcraft_backend.generate import checkpoint
    from headcraft_backend.generate.checkpoint import cached_generator
    from headcraft_backend.generate.networks import Generator
    ctx, path = _ctx(), tmp_path / "gen.json"
    G = Generator(z_dim=8, w_dim=8, w_num_layers=1, img_resolution=8, img_channels=6, channel_base=64, channel_max=8)
    for i in range(5):
        with torch.no_grad():
            G.mapping.layers[0].weight.fill_(float(i))
        checkpoint.save(G, path)
        loaded, info = cached_generator(ctx, str(path))
        assert float(loaded.mapping.layers[0].weight.detach()[0, 0]) == i
        assert cached_generator(ctx, str(path))[0] is loaded                  # unchanged: a hit
        assert [k[0] for k in ctx.cache] == ["generator"]
    assert ctx.cache.nbytes < 2 * sum(t.numel() * 4 for t in G.state_dict().values())


def test_a_replaced_head_model_file_replaces_its_cache_entry(tmp_path):
    import fixtures.flame_files as ff
    from headcraft_backend.head.registry import get_model
    files = ff.write_flame_files(tmp_path / "flame", seed=0)
    params = {"model": "flame", "flame": {"model_path": str(files.model), "masks_path": str(files.masks),
                                          "uv_path": str(files.obj)}}
    ctx = _ctx()
    model = get_model(ctx, params)
    first = model.data.v_template.copy()
    assert get_model(ctx, params) is model and len(ctx.cache) == 1
    again = ff.write_flame_files(tmp_path / "again", seed=1)
    os.replace(again.model, files.model)            # the same path, another file
    second = get_model(ctx, params).data.v_template
    assert len(ctx.cache) == 1 and not np.array_equal(first, second)


# -- 6: layout names -------------------------------------------------------------------------
def test_layout_names_outside_the_folder_are_no_layout(tmp_path):
    from headcraft_backend.head.registry import load_model_data
    from headcraft_backend.layout.store import _user_folder, get_layout, save_custom_layout
    data = load_model_data({"model": "openhead"})
    save_custom_layout(data, "mine", data.uv, cache_dir=tmp_path)
    folder = _user_folder(data, tmp_path)
    outside = tmp_path / "outside.npz"
    outside.write_bytes((folder / "mine.npz").read_bytes())
    (folder / "linked.npz").symlink_to(outside)
    assert get_layout(data, "mine", tmp_path).name == "mine"

    def message(name):
        with pytest.raises(UserError) as err:
            get_layout(data, name, tmp_path)
        return str(err.value).replace(repr(str(name)[:80]), "NAME")
    missing = message("no-such-layout")
    assert "no layout named" in missing
    for name in (str(tmp_path / "outside"), "../../outside", "../" * 8 + str(tmp_path / "outside")[1:],
                 "linked", "mine\n", ["mine"], "../../does-not-exist"):
        assert message(name) == missing, name


# -- 7: map sizes from headers ---------------------------------------------------------------
def test_map_size_is_checked_from_the_header_before_decoding(tmp_path):
    from headcraft_backend.layout import formats
    big = 10_000
    npy = tmp_path / "big.npy"             # a header claiming 10000^2 x 3 floats, no data
    with open(npy, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (big, big, 3)})
    exr = bytearray(formats.exr_bytes(np.zeros((8, 8, 3), np.float32)))
    at = exr.index(b"dataWindow\0box2i\0") + len(b"dataWindow\0box2i\0") + 4
    exr[at:at + 16] = struct.pack("<4i", 0, 0, big - 1, big - 1)     # 1.2 GB once decoded
    (tmp_path / "big.exr").write_bytes(bytes(exr))
    for c in range(3):                     # a 16-bit PNG triplet 9000 texels wide
        (tmp_path / f"wide_-20_to_20_ch{c}.png").write_bytes(formats.png16_bytes(np.zeros((1, 9000), np.uint16)))
    for name in ("big.npy", "big.exr", "wide_-20_to_20_ch0.png"):
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match="at most 8192x8192"):
                formats.read(tmp_path / name)
            assert tracemalloc.get_traced_memory()[1] < 50 << 20
        finally:
            tracemalloc.stop()


def test_map_convert_checks_the_input_size_when_a_size_is_given():
    from headcraft_backend.handlers import request_map
    from headcraft_backend.layout.jobs import convert_job
    ctx = _ctx()
    params = {"model": "openhead", "source": "standard", "target": "standard", "size": 128}
    with pytest.raises(UserError, match="maps to convert have 64 to 8192"):
        convert_job(ctx, params, {"map": np.zeros((16, 16, 3), np.float32)})
    with pytest.raises(UserError, match="at most 8192"):
        request_map({"map": np.broadcast_to(np.float32(0), (9000, 9000, 3))})
    with pytest.raises(UserError, match="parameter 'size': 1e\\+30 is not an integer"):
        convert_job(ctx, {**params, "size": 1e30}, {"map": np.zeros((64, 64, 3), np.float32)})


# -- 8, 9: scans -------------------------------------------------------------------------------
def sphere(n=40):
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n, endpoint=False), np.linspace(0.1, np.pi - 0.1, n))
    verts = 0.1 * np.stack([np.sin(v) * np.cos(u), np.sin(v) * np.sin(u), np.cos(v)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n), indexing="ij")
    a, b = i * n + j, i * n + (j + 1) % n
    faces = np.concatenate([np.stack([a, b, b + n], -1).reshape(-1, 3), np.stack([a, b + n, a + n], -1).reshape(-1, 3)])
    return verts, faces


def test_scan_files_with_absurd_counts_are_refused_before_loading(tmp_path):
    from headcraft_backend.fit.scan import load_scan_file
    obj = tmp_path / "one_vertex.obj"     # 10 M faces on one vertex: 80 MB
    obj.write_bytes(b"v 0 0 0\n" + b"f 1 1 1\n" * 10_000_000)
    t = time.monotonic()
    with pytest.raises(UserError, match="10,000,000 faces on 1 vertices: not a surface"):
        load_scan_file(obj)
    assert time.monotonic() - t < 5
    obj.unlink()
    ply = tmp_path / "claims.ply"         # a header claiming 2 G faces in a few bytes
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                    b"property float z\nelement face 2000000000\nproperty list uchar int vertex_indices\nend_header\n"
                    + bytes(64))
    with pytest.raises(UserError, match="more than .* bytes can hold"):
        load_scan_file(ply)
    big = tmp_path / "big.ply"            # 21 M faces declared, and the bytes to hold them claimed
    big.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 21000000\nproperty float x\nend_header\n")
    os.truncate(big, 50_000_000)
    with pytest.raises(UserError, match="at most 20,000,000 vertices"):
        load_scan_file(big)
    stl = tmp_path / "claims.stl"
    stl.write_bytes(bytes(80) + struct.pack("<I", 50_000_000) + bytes(50))
    with pytest.raises(UserError, match="more than .* bytes can hold"):
        load_scan_file(stl)


def test_scan_arrays_over_the_limits_are_refused_before_any_copy():
    from headcraft_backend.fit.scan import check_scan_counts, sanitize
    check_scan_counts("a real scan", 5_000_000, 10_000_000)         # big photogrammetry: accepted
    v = np.broadcast_to(np.float32(0), (3, 3))
    faces = np.broadcast_to(np.int32(0), (limits.MAX_SCAN_FACES + 1, 3))   # no memory behind it
    with pytest.raises(UserError, match="20,000,001 faces; a scan may have at most"):
        sanitize(np.broadcast_to(np.float32(0), (limits.MAX_SCAN_FACES, 3)), faces)
    with pytest.raises(UserError, match="not a surface"):
        sanitize(v, np.broadcast_to(np.int32(0), (5_000_000, 3)))


def test_a_far_stray_vertex_does_not_make_triangles_degenerate():
    from headcraft_backend.fit.scan import sanitize
    v, f = sphere()
    for stray in (np.array([[1e9, 0, 0]]), np.array([[1e9, 0, 0], [1e9, 1, 0], [1e9, 0, 1]])):
        faces = f if len(stray) == 1 else np.concatenate([f, [[len(v), len(v) + 1, len(v) + 2]]])
        scan = sanitize(np.concatenate([v, stray]), faces)     # unused, then used by one triangle
        assert not any("degenerate" in n for n in scan.notes), scan.notes
        assert len(scan.faces) == len(f) and np.abs(scan.vertices).max() < 1


# -- 10: the restricted unpickler --------------------------------------------------------------
def chumpy(name, state: bytes) -> bytes:
    return (b"ccopy_reg\n_reconstructor\n(cchumpy.reordering\n" + name + b"\nc__builtin__\nobject\nNtR(d"
            + state + b"b.")


@pytest.mark.parametrize("data", [
    chumpy(b"Tile", b"S'a'\nF1.0\nsS'reps'\n(I200000000\ntp0\ns"),
    chumpy(b"Repeat", b"S'a'\nF1.0\nsS'repeats'\nI200000000\ns"),
    chumpy(b"DiagFlat", b"S'a'\n" + chumpy(b"Tile", b"S'a'\nF1.0\nsS'reps'\n(I20000\ntp0\ns")[:-1] + b"s"),
])
def test_chumpy_reorderings_cannot_blow_up(data):
    from headcraft_backend.head.safe_pickle import loads_restricted
    assert len(data) < 300
    with pytest.raises(HeadModelError, match="elements; an array in a head-model file has at most"):
        loads_restricted(data, "x.pkl")


def test_a_pickle_cannot_change_the_allowed_functions():
    from headcraft_backend.head import safe_pickle
    before = safe_pickle._latin1_encode.__defaults__
    for glob in (b"c_codecs\nencode\n", b"cnumpy.core.numeric\n_frombuffer\n", b"ccopy_reg\n_reconstructor\n"):
        for state in (b"(N}S'__defaults__'\n(S'utf8'\nS'strict'\ntst", b"}S'x'\nI1\ns"):
            with pytest.raises(HeadModelError):
                safe_pickle.loads_restricted(glob + state + b"b.", "x.pkl")
    assert safe_pickle._latin1_encode.__defaults__ == before == ("latin1", "strict")
    assert not hasattr(safe_pickle._safe_reconstructor, "x")
    # a chumpy name stays the file's own: nothing is cached across loads
    assert safe_pickle.loads_restricted(chumpy(b"Tile", b"S'a'\nF2.0\nsS'reps'\n(I3\ntp0\ns")).tolist() == [2.0] * 3


# -- 11: generator configs ---------------------------------------------------------------------
def test_generator_configs_are_checked_before_anything_is_allocated(tmp_path):
    from headcraft_backend.generate import checkpoint
    from headcraft_backend.generate.networks import Generator
    good = {"z_dim": 8, "w_dim": 8, "w_num_layers": 1, "img_resolution": 8, "img_channels": 6,
            "channel_base": 64, "channel_max": 8}
    _, cfg = checkpoint.save(Generator(**good), tmp_path / "g")       # real weights of a tiny generator
    checkpoint.load(cfg)
    huge = {"z_dim": 16384, "w_dim": 16384, "w_num_layers": 64, "img_resolution": 8192, "img_channels": 64,
            "channel_base": 1 << 24, "channel_max": 16384}
    cases = [([1, 2], "a JSON object, not a list"),
             ({"format": checkpoint.FORMAT, "version": 1, "config": good, "extra": 1}, "unknown key.*'extra'"),
             ({"format": checkpoint.FORMAT, "version": 1, "config": {**good, "depth": 3}}, "unknown key.*'depth'"),
             ({"format": checkpoint.FORMAT, "version": 1, "config": [8]}, "must be a JSON object"),
             ({"format": checkpoint.FORMAT, "version": 1, "config": {**good, "z_dim": 10 ** 9}}, "z_dim"),
             ({"format": checkpoint.FORMAT, "version": 1, "config": {**good, "z_dim": 8.5}}, "z_dim"),
             ({"format": checkpoint.FORMAT, "version": 1, "config": huge}, "does not describe"),
             ({"format": "headcraft-pca", "version": 1, "components": 10 ** 6, "size": 8192}, "PCA of"),
             ({"format": "headcraft-pca", "version": 1, "components": 2, "size": 8}, "does not match")]
    for text, why in cases:
        cfg.write_text(json.dumps(text))
        t = time.monotonic()
        with pytest.raises(checkpoint.CheckpointError, match=why):
            checkpoint.load(cfg)
        assert time.monotonic() - t < 2
    cfg.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        checkpoint.load(cfg)


def test_cli_refuses_a_bad_config_in_one_line(tmp_path):
    cfg = tmp_path / "list.json"
    cfg.write_text("[1, 2, 3]")
    out = subprocess.run([sys.executable, "-m", "headcraft_backend", "generate", str(cfg), "--device", "cpu",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "JSON object" in out.stderr and "Traceback" not in out.stderr


# -- 13, 14: token file, atomic writes -------------------------------------------------------
def test_token_file_is_0600_and_never_written_through_a_link(tmp_path, monkeypatch):
    from headcraft_backend.cli import _read_token
    monkeypatch.delenv("HEADCRAFT_TOKEN", raising=False)
    path = tmp_path / "backend.token"
    path.write_text("old\n")
    path.chmod(0o644)
    token = _read_token(SimpleNamespace(token_stdin=False, token_file=str(path)))
    assert path.read_text() == token + "\n" and (path.stat().st_mode & 0o777) == 0o600
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    link = tmp_path / "link.token"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        _read_token(SimpleNamespace(token_stdin=False, token_file=str(link)))
    assert target.read_text() == "keep me\n" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backend.token", "link.token", "precious.txt"]


def test_failed_writes_leave_the_previous_file_whole(tmp_path, monkeypatch):
    """Fault injected (a crash half-way through a write cannot be caused otherwise): the writer
    writes half a file, then raises."""
    from headcraft_backend.generate import checkpoint
    from headcraft_backend.generate.networks import Generator
    from headcraft_blender.client import launcher

    def half_then_fail(tmp, data=b"x" * 1000):
        Path(tmp).write_bytes(data[:500])
        raise OSError("disk full (injected)")
    path = tmp_path / "file.bin"
    path.write_bytes(b"whole")
    with pytest.raises(OSError, match="injected"):
        write_atomic(path, half_then_fail, required=True)
    assert path.read_bytes() == b"whole"

    G = Generator(z_dim=8, w_dim=8, w_num_layers=1, img_resolution=8, img_channels=6, channel_base=64, channel_max=8)
    weights, cfg = checkpoint.save(G, tmp_path / "gen")
    before = weights.read_bytes(), cfg.read_bytes()
    import safetensors.torch
    monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, tmp: half_then_fail(tmp))
    with pytest.raises(OSError, match="injected"):
        checkpoint.save(G, tmp_path / "gen")
    assert (weights.read_bytes(), cfg.read_bytes()) == before
    checkpoint.load(cfg)

    def crash(*args):
        raise OSError("crash before the rename (injected)")
    pid = tmp_path / "backend.pid"
    launcher.write_atomic(pid, json.dumps({"pid": 1}))
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="injected"):
        launcher.write_atomic(pid, json.dumps({"pid": 2}))
    monkeypatch.undo()
    assert json.loads(pid.read_text()) == {"pid": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backend.pid", "file.bin", "gen.json", "gen.safetensors"]
