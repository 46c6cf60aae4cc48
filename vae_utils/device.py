"""Where a computation runs: 'cpu', 'cuda', or 'auto' (a CUDA GPU when torch finds one).

The device is a runtime choice, never part of what a run computes: a run's identity, its
checkpoint and its record are the same on either device. What differs is recorded in its
provenance (``device_provenance``: the device, the GPU's name, the CUDA and driver versions)
and in the random numbers: each device has its own generator (``seeded_generator``), so a run on a
GPU draws other minibatches and noise than the same run on a CPU (the same distribution), unless
it draws from the CPU's (``TrainConfig.draws = "cpu"``, AEVB): then a GPU run trains on the CPU
run's very minibatches and noise, copied over (``moved``), and differs from it by rounding only.

Tensors and generators are made on the device of the data they serve, so every estimator and
algorithm runs wherever its inputs are: ``like.device`` is the device of a draw for ``like``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

import torch

DEVICES = ("auto", "cpu", "cuda")


def check_device(name) -> None:
    """A device name is one of DEVICES; 'cuda' needs a GPU torch can use (one line otherwise)."""
    if not isinstance(name, str) or name not in DEVICES:
        raise ValueError(f"device={name!r} is not allowed: expected one of {', '.join(map(repr, DEVICES))}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device='cuda' is not available here: torch {torch.__version__} finds no CUDA GPU "
                         f"(torch.cuda.is_available() is False); use device='cpu' or 'auto'")


def resolve(name: str = "auto") -> torch.device:
    """The torch.device a name stands for: 'auto' is the GPU when there is one, else the CPU."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (on the CPU exactly ``torch.Generator().manual_seed``)."""
    device = torch.device(device)
    return (torch.Generator() if device.type == "cpu" else torch.Generator(device=device)).manual_seed(seed)


def generator_for(seed: int, like: torch.Tensor) -> torch.Generator:
    """A seeded generator on the device of ``like``."""
    return seeded_generator(seed, like.device)


def model_device(model) -> torch.device:
    """The device of a model's parameters or buffers (the CPU for a model without any)."""
    for kind in ("parameters", "buffers"):
        tensors = getattr(model, kind, None)
        first = next(iter(tensors()), None) if callable(tensors) else None
        if isinstance(first, torch.Tensor):
            return first.device
    return torch.device("cpu")


def moved(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``: itself where it is there already; from the CPU to a GPU through pinned
    memory, so that the copy is queued behind the GPU's work instead of waiting for it."""
    if t.device == device:
        return t
    return (t.pin_memory() if t.device.type == "cpu" and device.type == "cuda" else t).to(device, non_blocking=True)


def to_cpu(obj):
    """A copy of a (nested) state dict with every tensor on the CPU: a checkpoint loadable anywhere."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)  # a copy: a view would save its whole base (a batch of runs)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@functools.lru_cache(maxsize=None)
def _driver_version() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


def device_provenance(device: torch.device | str) -> dict:
    """What a record says about the device that computed it."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"device": "cpu"}
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"device": "cuda", "gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
            "driver": _driver_version(), "tf32": torch.backends.cuda.matmul.allow_tf32}


def kind_of(record: dict) -> str:
    """The kind of device ('cpu' or 'cuda') that made a record (records before the device knob: 'cpu')."""
    prov = record.get("provenance") if isinstance(record, dict) else None
    return (prov or {}).get("device", "cpu") if isinstance(prov, dict) else "cpu"
