"""Loaded by every Python process when this folder is on PYTHONPATH (`make test-fp32`): the
CPU then reports no native bf16 (no AMX, no AVX512-BF16), so `--bf16 on` is refused, as on
an AVX2-only CPU; test subprocesses inherit it."""

import torch.cpu

torch.cpu._is_avx512_bf16_supported = lambda: False
torch.cpu._is_amx_tile_supported = lambda: False
