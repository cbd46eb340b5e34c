"""The Fit Scan panel's settings: scene.headcraft.fit."""
import bpy

from ..client.presets import PAPER_WEIGHTS
from ..declared import choices, default
from ..models import MODEL_ITEMS
from ..roles import has_role

PRESET_ITEMS = choices("fit.scan", "preset", {
    "paper": ("Paper", "The paper's settings: 1000 + 1000 registration steps"),
    "preview": ("Preview", "250 + 250 larger steps: a quick look")})
LANDMARK_ITEMS = [("AUTO", "Automatic", "Detect face landmarks on a render of the scan"),
                  ("HAND", "Hand-Placed", "Use the scan's Landmarks object (Detect Landmarks, then edit them)")]
UNIT_ITEMS = [("AUTO", "Estimate", "Estimate the scale from the landmarks and the surface"),
              ("SCENE", "Scene Units", "The scan's world-space size is right in the scene's units"),
              ("MM", "Millimeters", "World-space coordinates are millimeters (a typical scanner export)"),
              ("CM", "Centimeters", "World-space coordinates are centimeters"),
              ("M", "Meters", "World-space coordinates are meters")]
SCAN_KIND_ITEMS = [("FULL", "Full Scan", "A scan of the whole head"),
                   ("DEPTH", "Depth View", "A single depth map or dense partial cloud"),
                   ("SPARSE", "Sparse Cloud", "A sparse partial point cloud")]
# Every weight of the fit, defaulting to the paper preset's (the backend's presets.py, copied):
# (property, request section, backend field, default, label); the property is <section>_<term>
WEIGHTS = tuple((f"{section}_{field.removeprefix('w_')}", section, field, PAPER_WEIGHTS[section][field], label)
                for section, fields in (
                    ("stage1", (("w_chamfer", "Chamfer"), ("w_edge", "Edge"), ("w_laplacian", "Laplacian"),
                                ("prune", "Prune"))),
                    ("stage2", (("w_chamfer", "Chamfer"), ("w_edge", "Edge"), ("w_laplacian", "Laplacian"),
                                ("prune", "Prune"))),
                    ("coarse", (("w_landmarks", "Landmarks"), ("w_surface", "Surface"),
                                ("w_shape", "Identity Prior"), ("w_expr", "Expression Prior"),
                                ("w_pose", "Pose Prior"), ("w_jaw_side", "Jaw Sideways Prior"))))
                for field, label in fields)
_STAGE = {"stage1": "Stage 1 (hair and scalp)", "stage2": "Stage 2 (face and hair, along normals)"}
WEIGHT_TOOLTIPS = {   # the weights' tooltips, by property
    **{f"stage{n}_{term}": f"{_STAGE[f'stage{n}']}: {text}" for n in (1, 2) for term, text in (
        ("chamfer", "how strongly the head's surface is pulled onto the scan"),
        ("edge", "how strongly edge lengths are kept (higher stretches the surface less)"),
        ("laplacian", "how strongly the surface is kept smooth"),
        ("prune", "scan and head points farther apart than this " + ("squared " if n == 1 else "")
                  + "distance (HeadCraft units, 1 = 8.3 mm) do not pull on each other"))},
    "coarse_landmarks": "Coarse fit: how strongly the head's landmarks are pulled onto the scan's",
    "coarse_surface": "Coarse fit: how strongly the head's surface is pulled onto the scan",
    "coarse_shape": "Coarse fit: how strongly the identity is kept near the average head",
    "coarse_expr": "Coarse fit: how strongly the expression is kept near a neutral face",
    "coarse_pose": "Coarse fit: how strongly the jaw and neck are kept near their rest pose",
    "coarse_jaw_side": "Coarse fit: how strongly the jaw is kept from turning or tilting sideways",
}
WEIGHT_SECTIONS = (("coarse", "Coarse Fit"), ("stage1", "Stage 1: Hair and Scalp"),
                   ("stage2", "Stage 2: Face and Hair, Along Normals"))


def _is_mesh(self, obj):
    return obj.type == "MESH" and not has_role(obj)


class HeadCraftFitSettings(bpy.types.PropertyGroup):
    scan: bpy.props.PointerProperty(name="Scan", type=bpy.types.Object, poll=_is_mesh,
                                    description="The scan mesh to fit (it is never modified)")
    model: bpy.props.EnumProperty(name="Model", items=MODEL_ITEMS, default=default("fit.scan", "model"),
                                  description="The parametric head model fitted to the scan")
    preset: bpy.props.EnumProperty(name="Preset", items=PRESET_ITEMS, default=default("fit.scan", "preset"),
                                   description="Steps and step sizes of the detailed fit")
    landmarks: bpy.props.EnumProperty(name="Landmarks", items=LANDMARK_ITEMS, default="AUTO",
                                      description="Where the face landmarks that start the fit come from")
    scan_kind: bpy.props.EnumProperty(name="Scan Kind", items=SCAN_KIND_ITEMS, default="FULL",
                                      description="How much of the head the scan covers")
    steps: bpy.props.IntProperty(name="Steps per Stage", default=0, min=0, max=20000,
                                 description="Registration steps per stage; 0 uses the preset's")
    units: bpy.props.EnumProperty(name="Scan Units", items=UNIT_ITEMS, default="AUTO",
                                  description="The scan's units, which set the head's size")
    latent_steps: bpy.props.IntProperty(
        name="Latent Steps per Stage", default=500, min=1, max=100_000,
        description="Complete Head: steps of each stage of the generator's latent fit (z, the W+ delta, the "
                    "scalp noise; the paper: 500 each)")
    keep_observed: bpy.props.BoolProperty(
        name="Keep Observed Detail", default=False,
        description="Complete Head: keep the registered displacements where the scan saw the head (the paper "
                    "uses the generator's everywhere)")
    custom_weights: bpy.props.BoolProperty(
        name="Custom Weights", default=False,
        description="Send the weights below instead of the preset's (learning rates stay the preset's)")


for _prop, _section, _field, _default, _label in WEIGHTS:
    # (the stubs type bpy.props' functions as returning None; they return the property to be)
    HeadCraftFitSettings.__annotations__[_prop] = bpy.props.FloatProperty(  # type: ignore[func-returns-value]
        name=_label, default=_default, min=0.0, precision=4, description=WEIGHT_TOOLTIPS[_prop])


CLASSES = (HeadCraftFitSettings,)
