"""Compute device selection: auto / cpu / cuda[:N]."""
from __future__ import annotations

import torch

from .jobs import UserError


def resolve_device(choice: str = "auto") -> torch.device:
    choice = (choice or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {choice!r} was requested but this torch build "
                            f"({torch.__version__}) sees no CUDA GPU; choose 'auto' or 'cpu'")
        return torch.device(choice)
    raise UserError(f"unknown device {choice!r}: use auto, cpu or cuda")


def describe_device(device: torch.device) -> dict:
    info = {"device": str(device), "cuda_available": torch.cuda.is_available(),
            "torch_version": torch.__version__, "device_name": "CPU"}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
