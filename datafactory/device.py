"""Where torch runs: the one resolver of ``--device`` (auto, cpu, cuda) and the mixed precision
that goes with a device. The style models' training and translation and the downstream
trainers all ask here. (abTEM's multislice device, which needs CuPy, is resolved by
:func:`datafactory.simulation.multislice.resolve_device`.)"""

from __future__ import annotations

from datafactory.errors import FactoryError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FactoryError("cuda: no CUDA device is available here (use `device='cpu'` or `device='auto'`)", field="device")
    if device not in ("cpu", "cuda"):
        raise FactoryError(f"must be auto, cpu or cuda (got '{device}')", field="device")
    return device


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN with AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: str):
    """Mixed-precision dtype on ``device``: on cuda bfloat16 where the GPU has it (Ampere and
    later: no gradient scaler, no float16 overflow in the adversarial losses), else float16;
    bfloat16 on CPUs with native bf16 (AVX512-BF16/AMX), else None (float32). Training and
    translation both use it."""
    import torch

    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_bf16_supported() else None
