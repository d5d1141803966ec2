"""Where tensors live. Lecture code takes the device from its input (`x.device`);
only the places that *create* tensors need to choose one."""
import torch


def default_device() -> torch.device:
    """`cuda` when a CUDA GPU is visible, else `cpu`.

    >>> default_device().type in {"cpu", "cuda"}
    True
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_devices() -> list[torch.device]:
    """Every device the tests should cover here: the CPU, plus CUDA when present."""
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices
