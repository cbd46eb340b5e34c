"""Settings of .blend files saved before the settings were grouped by capability: their flat
names (fit_preset, gen_seed, map_size...) sit in scene.headcraft as plain ID properties. When
such a file loads, and when the extension is enabled, each value moves to its place in the
groups (scene.headcraft.fit.preset...) and the old name is deleted."""
from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

# old name: (group, new name)
RENAMED = {
    **{old: ("head", old) for old in ("model", "num_shape", "num_expr", "random_identity", "random_expression")},
    **{f"fit_{old}": ("fit", new) for old, new in (
        ("scan", "scan"), ("model", "model"), ("preset", "preset"), ("landmarks", "landmarks"),
        ("partial", "scan_kind"), ("steps", "steps"), ("units", "units"), ("custom_weights", "custom_weights"))},
    **{f"fit_w{tag}_{term}": ("fit", f"{section}_{term}")
       for tag, section, terms in (("1", "stage1", ("chamfer", "edge", "laplacian", "prune")),
                                   ("2", "stage2", ("chamfer", "edge", "laplacian", "prune")),
                                   ("c", "coarse", ("landmarks", "surface", "shape", "expr", "pose", "jaw_side")))
       for term in terms},
    **{f"map_{old}": ("layout", new) for old, new in (
        ("layout", "uv_layout"), ("layouts", "known_layouts"), ("size", "size"), ("space", "space"), ("exr", "exr"),
        ("png16", "png16"), ("npy", "npy"), ("storage", "storage"), ("folder", "folder"), ("file", "map_file"),
        ("image", "map_image"))},
    **{f"gen_{old}": ("generate", old) for old in ("checkpoint", "seed", "psi", "noise", "mix", "mix_seed",
                                                   "mix_from")},
    "interp_seed_b": ("generate", "to_seed"), "interp_steps": ("generate", "interpolate_steps"),
    "fit_latent_steps": ("generate", "fit_steps"),
    **{f"anim_{old}": ("animate", old) for old in ("scene_range", "frame_start", "frame_end")},
    **{f"render_{old}": ("animate", new) for old, new in (
        ("engine", "engine"), ("resolution", "resolution"), ("samples", "samples"),
        ("turntable_views", "turntable_views"), ("folder", "output_folder"), ("contact_count", "sheet_frames"),
        ("contact_columns", "sheet_columns"))},
}
# settings that came after the grouping (no old file holds them)
ADDED = {("generate", "hair_source"), ("fit", "latent_steps"), ("fit", "keep_observed")}
# A file stores an enum setting as its item's index: the old settings' items, in their order.
OLD_ENUM_ITEMS = {
    "model": ("OPENHEAD", "FLAME"), "fit_model": ("OPENHEAD", "FLAME"), "fit_preset": ("PAPER", "PREVIEW"),
    "fit_landmarks": ("AUTO", "HAND"), "fit_partial": ("FULL", "DEPTH", "SPARSE"),
    "fit_units": ("AUTO", "SCENE", "MM", "CM", "M"), "map_size": ("256", "512", "1024", "2048", "4096"),
    "map_space": ("OBJECT", "TANGENT"), "map_storage": ("PACK", "FILE"), "gen_noise": ("CONST", "RANDOM", "NONE"),
    "render_engine": ("CYCLES", "EEVEE", "WORKBENCH"),
}


def _value(old: str, value, rna):
    """The stored value as the new setting takes it."""
    if old in OLD_ENUM_ITEMS:
        items = OLD_ENUM_ITEMS[old]
        if not isinstance(value, int) or not 0 <= value < len(items):
            raise ValueError(f"no item {value!r}")
        return items[value]
    if hasattr(value, "to_list"):          # an array (the render resolution)
        return value.to_list()
    if rna.type == "BOOLEAN":
        return bool(value)
    return value


def _stores(scene) -> list:
    """Where a scene's old settings can be: the settings group's own ID properties; with
    Blender 5, also the copy of an older file's add-on data among the scene's custom properties."""
    stores = [scene.headcraft]
    if hasattr(scene, "bl_system_properties_get"):      # Blender 5: add-on data is stored apart
        copy = scene.get("headcraft")
        if hasattr(copy, "keys"):
            stores.append(copy)
    return stores


def migrate(scene) -> list[str]:
    """Move a scene's old flat settings into the groups and delete them; returns the old names
    found. A value the setting no longer takes (an enum index past the old items, a wrong type)
    is dropped and the setting keeps what it has."""
    if scene.library is not None:          # linked from another file: read-only, that file is migrated there
        return []
    found, moved = [], set()
    groups = scene.headcraft
    for store in _stores(scene):
        for old in [k for k in store.keys() if k in RENAMED]:
            value = store[old]
            group_name, new = RENAMED[old]
            group = getattr(groups, group_name)
            if old not in moved:
                try:
                    setattr(group, new, _value(old, value, group.bl_rna.properties[new]))
                except (TypeError, ValueError, AttributeError, OverflowError):
                    pass
                moved.add(old)
            del store[old]
            found.append(old)
    if len(_stores(scene)) > 1 and not scene["headcraft"].keys():
        del scene["headcraft"]             # Blender 5's copy held only old settings
    return found


def migrate_all() -> None:
    """Every scene of the open file (nothing while Blender starts: load_post follows)."""
    try:
        scenes = list(bpy.data.scenes)
    except AttributeError:                 # bpy.data is not readable while add-ons register at start-up
        return
    for scene in scenes:
        migrate(scene)


@persistent
def on_load(_filepath) -> None:
    migrate_all()
