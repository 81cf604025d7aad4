"""What the machine decides of the recipe: bf16 where the CPU or GPU has native bf16 units,
and, where a CPU trains in fp32, the lower layers frozen. Training resolves both here, and a
reproduction asks the same functions what this machine would resolve."""

from __future__ import annotations

import torch

from tasks.model import encoder_layers


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: the CPUs where bf16 autocast is faster than fp32."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def use_bf16(setting: str) -> bool:
    """Resolve the `bf16` setting: on CUDA ask the GPU, on CPU look for native bf16 units."""
    if setting != "auto":
        return setting == "on"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def layers_to_freeze(setting: int | str, bf16: bool, model) -> int:
    """Resolve `freeze_layers`. 'auto' keeps the lower third of the layers fixed where a CPU
    trains in fp32: with their outputs kept (`tasks/frozen_features.py`), that made the
    default recipe 2.17x the seed script's speed on emulated AVX2 kernels over seeds 42-46
    (every weight trained: 1.54x), at a validation accuracy within seed noise of the
    script's (+0.78 ± 1.31 points, mean ± sd of the per-seed differences; bench/RESULTS.md).
    Where bf16 or a GPU makes training fast already, every weight is trained."""
    if setting != "auto":
        return int(setting)
    layers = encoder_layers(model)
    if bf16 or torch.cuda.is_available() or layers is None:
        return 0
    return len(layers) // 3
