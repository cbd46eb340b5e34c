"""Add-on preferences: where the backend runs, the device, FLAME files, models folder."""

import bpy

from . import runtime, ui


class HeadCraftPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_mode: bpy.props.EnumProperty(
        name="Backend", default="LOCAL", description="Where the backend that runs HeadCraft's jobs is",
        items=[("LOCAL", "Local Process", "Start the backend on this machine when first needed"),
               ("REMOTE", "Remote / Existing", "Connect to a running backend (e.g. a GPU machine "
                                                "reached through an SSH tunnel)")])
    python_path: bpy.props.StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python of an environment with headcraft-backend installed; empty uses the "
                    "environment made by 'Set Up Backend'")
    device: bpy.props.EnumProperty(
        name="Device", default="AUTO", description="Where the local backend computes",
        items=[("AUTO", "Auto", "CUDA GPU when available, else CPU"),
               ("CPU", "CPU", "Always the CPU (fits and generation are much slower)"),
               ("CUDA", "CUDA", "Require a CUDA GPU")])
    remote_host: bpy.props.StringProperty(name="Host", default="127.0.0.1",
                                          description="Address of the running backend")
    remote_port: bpy.props.IntProperty(name="Port", default=0, min=0, max=65535,
                                       description="Port of the running backend")
    remote_token: bpy.props.StringProperty(name="Token", subtype="PASSWORD",
                                           description="The token the remote backend wrote to its token file")
    setup_base_python: bpy.props.StringProperty(
        name="Base Python", subtype="FILE_PATH",
        description="Python 3.10+ used to create the backend environment; empty uses Blender's")
    setup_torch: bpy.props.StringProperty(
        name="Torch", default="torch",
        description="The pip requirement for PyTorch (e.g. torch==2.13.0)")
    setup_index_url: bpy.props.StringProperty(
        name="Torch Index URL", default="",
        description="Optional extra index for a specific CUDA build of torch")
    flame_model_path: bpy.props.StringProperty(name="FLAME Model", subtype="FILE_PATH",
                                               description="FLAME's generic_model.pkl (2020) or flame2023.pkl")
    flame_masks_path: bpy.props.StringProperty(name="FLAME Masks", subtype="FILE_PATH",
                                               description="FLAME's region masks, FLAME_masks.pkl")
    flame_uv_path: bpy.props.StringProperty(name="FLAME UV Template", subtype="FILE_PATH",
                                            description="head_template.obj from FLAME's texture space")
    flame_landmark_path: bpy.props.StringProperty(
        name="FLAME Landmarks", subtype="FILE_PATH",
        description="landmark_embedding.npy or mediapipe_landmark_embedding.npz (optional)")

    def draw(self, context):
        layout = self.layout
        box = layout.box()
        box.label(text="Backend", icon="CONSOLE")
        box.prop(self, "backend_mode", expand=True)
        if self.backend_mode == "LOCAL":
            box.prop(self, "python_path")
            box.prop(self, "device")
            sub = box.box()
            sub.label(text=f"Managed environment: {runtime.managed_python()}")
            sub.prop(self, "setup_base_python")
            row = sub.row(align=True)
            row.prop(self, "setup_torch")
            row.prop(self, "setup_index_url")
            sub.operator("headcraft.setup_backend", icon="IMPORT")
        else:
            row = box.row(align=True)
            row.prop(self, "remote_host")
            row.prop(self, "remote_port")
            box.prop(self, "remote_token")
        ui.draw_status(box, context)
        row = box.row(align=True)
        row.operator("headcraft.restart_backend", icon="FILE_REFRESH")
        row.operator("headcraft.release_gpu", icon="MEMORY")
        row.operator("headcraft.stop_backend", icon="CANCEL")
        box = layout.box()
        box.label(text="FLAME (download from flame.is.tue.mpg.de after accepting its license)",
                  icon="FILE")
        for prop in ("flame_model_path", "flame_masks_path", "flame_uv_path", "flame_landmark_path"):
            box.prop(self, prop)


CLASSES = (HeadCraftPreferences,)
