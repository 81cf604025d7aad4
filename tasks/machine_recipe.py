"""What the machine decides of the recipe: bf16 autocast on a GPU that computes it, fp32 on
every CPU, and, where a CPU trains in fp32, the lower layers frozen. Training resolves both
here, and a reproduction asks the same functions what this machine would resolve."""

from __future__ import annotations

import torch

from tasks.config import ConfigError
from tasks.model import encoder_layers


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: the CPUs that compute bf16 in hardware."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def native_bf16() -> bool:
    """Whether this machine computes bf16 in hardware: the GPU, if any, else the CPU."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def refuse_emulated_bf16(setting: str) -> None:
    """Refuse `bf16 on` where bf16 would be emulated: on emulated AVX2 kernels a bf16
    training step ran about 20x slower than fp32 (1.9 against 37.1 samples/s;
    bench/RESULTS.md). Checked before any run is opened."""
    if setting == "on" and not native_bf16():
        where = "this GPU does not support" if torch.cuda.is_available() else "this CPU lacks"
        raise ConfigError(
            f"--bf16 on: {where} native bf16 (a CPU needs AMX or AVX512-BF16), so bf16 would "
            "be emulated, many times slower than fp32; use --bf16 off or auto"
        )


def use_bf16(setting: str) -> bool:
    """Resolve the `bf16` setting. 'auto' is bf16 on a GPU that computes it and fp32 on every
    CPU: on a CPU with AVX512-BF16, bf16 autocast trained MRPC to a test accuracy 2.30 points
    lower than fp32 with frozen layers (95% interval [0.72, 3.87], 5 paired seeds) for 5% less
    wall time (bench/RESULTS.md)."""
    refuse_emulated_bf16(setting)
    if setting != "auto":
        return setting == "on"
    return torch.cuda.is_available() and native_bf16()


def layers_to_freeze(setting: int | str, bf16: bool, model) -> int:
    """Resolve `freeze_layers`. 'auto' keeps the lower third of the layers fixed where a CPU
    trains in fp32: with their outputs kept (`tasks/frozen_features.py`), the default recipe
    on a CPU with AVX512-BF16 was 2.23x as fast as the seed's script over seeds 42-46, at a
    test accuracy +0.20 points from the script's (95% interval [-0.93, +1.32];
    bench/RESULTS.md). Where bf16 or a GPU makes training fast already, every weight is
    trained."""
    if setting != "auto":
        return int(setting)
    layers = encoder_layers(model)
    if bf16 or torch.cuda.is_available() or layers is None:
        return 0
    return len(layers) // 3
