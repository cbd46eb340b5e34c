"""Issue 18, item 15: broken or hostile performance files get a clear refusal (PerformanceError,
reported by Import Performance), never a traceback, a float32 overflow or an unbounded frame count."""
import re
import zipfile

import numpy as np
import pytest


def csv_rows(path, rows):
    path.write_text("Timecode,BlendShapeCount,JawOpen\n" + "".join(f"{tc},1,{v}\n" for tc, v in rows))
    return path


def hostile_files(tmp_path):
    """name -> (file, words the refusal names)."""
    files = {
        "inf timecode": (csv_rows(tmp_path / "inf.csv", [("00:00:00:00", 0.1), ("00:00:00:inf", 0.2)]), "not a time"),
        "nan timecode": (csv_rows(tmp_path / "nan.csv", [("00:00:00:nan", 0.1)]), "not a time"),
        "1e308 value": (csv_rows(tmp_path / "big.csv", [("00:00:00:00", 1e308), ("00:00:00:01", 0.0)]), "beyond"),
        "10 h gap at 60 fps": (csv_rows(tmp_path / "gap.csv", [("00:00:00:00", 0.0), ("99:00:00:59", 0.1)]),
                               "at most 1,000,000"),
    }
    (tmp_path / "empty.npz").write_bytes(b"")
    files["empty npz"] = (tmp_path / "empty.npz", "not a readable .npz")
    (tmp_path / "text.npz").write_text("not a zip at all\n")
    files["non-zip npz"] = (tmp_path / "text.npz", "not a readable .npz")
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04" + bytes(40))
    files["torn zip"] = (tmp_path / "torn.npz", "not a readable .npz")
    np.savez(tmp_path / "slow.npz", jaw_pose=np.zeros((3, 3)), fps=np.array(1e-9))
    files["fps 1e-9"] = (tmp_path / "slow.npz", "at most 1,000,000")
    np.savez(tmp_path / "huge.npz", jaw_pose=np.full((2, 3), 1e300))
    files["1e300 pose"] = (tmp_path / "huge.npz", "beyond")
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:   # 1.2 GB of zeros, 1 MB zipped
        with zf.open("expr.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (2_000_000, 100)})
            fh.write(bytes(1 << 20))
    files["decompression bomb"] = (tmp_path / "bomb.npz", "at most 1,000,000 frames")
    return files


def test_hostile_performance_files_are_refused_clearly(blender, ext, tmp_path):
    perf = ext.animate.performance
    for what, (path, words) in hostile_files(tmp_path).items():
        with pytest.raises(perf.PerformanceError, match=words):
            perf.resample(perf.read(path), 24.0)


def test_import_performance_reports_them_without_a_traceback(blender, ext, tmp_path):
    bpy = blender
    assert bpy.ops.headcraft.add_head(model="OPENHEAD", num_shape=2, num_expr=52) == {"FINISHED"}
    for what, (path, words) in hostile_files(tmp_path).items():
        with pytest.raises(RuntimeError) as err:
            bpy.ops.headcraft.import_performance(filepath=str(path), frame_start=1)
        assert "Traceback" not in str(err.value) and re.search(words, str(err.value)), (what, str(err.value))
    ok = csv_rows(tmp_path / "ok.csv", [(f"00:00:00:{i:02d}", i / 10) for i in range(10)])
    assert bpy.ops.headcraft.import_performance(filepath=str(ok), frame_start=1) == {"FINISHED"}
