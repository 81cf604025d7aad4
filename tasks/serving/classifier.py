"""The logged model's code: an MLflow pyfunc text classifier (MLflow "models from code").

MLflow copies this file into the model's artifacts, so `mlflow.pyfunc.load_model` needs
MLflow and the model's runtime only, never this project. Two runtimes, chosen by the
model's artifacts:
- `model` (transformers weights): torch, under bf16 autocast where the CPU or GPU computes
  bf16 natively, the speed the hardware allows; `params={"precision": "fp32"}` gives fp32.
- `onnx` (an exported `model.onnx`, fp32 or int8-quantised, beside its tokenizer and
  config): ONNX Runtime on CPU, no torch needed.
Both predict in batches of similar length (less padding), inputs truncated to the
`max_length` of training (the model config), scores calibrated by the model config's
`temperature` (logits divided by it; 1 unless trained with --calibrate temperature). Input
columns `text` and optional
`text_pair`; output columns `label` (the label's name) and `score` (its probability), like
the transformers flavour's text-classification pipeline.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model
from transformers import AutoConfig, AutoTokenizer

BATCH_SIZE = 64


def native_bf16() -> bool:
    """AMX or AVX512-BF16 on CPU, or a bf16-capable GPU: the rule of the project's
    `tasks.machine_recipe.native_bf16()`, repeated here because this file must run without the
    project (keep the two in step)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


class TorchLogits:
    """Logits of the transformers model, in bf16 where native unless fp32 is asked for."""

    def __init__(self, folder: str):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True
        ).eval()
        self.model.to(self.device)
        self.bf16 = native_bf16()

    def __call__(self, batch: dict[str, np.ndarray], precision: str) -> np.ndarray:
        torch = self.torch
        bf16 = self.bf16 and precision != "fp32"
        inputs = {key: torch.from_numpy(value).to(self.device) for key, value in batch.items()}
        with torch.inference_mode(), torch.autocast(self.device, torch.bfloat16, enabled=bf16):
            return self.model(**inputs).logits.float().cpu().numpy()


class OnnxLogits:
    """Logits of the exported ONNX graph; its precision was fixed at export."""

    def __init__(self, folder: str):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            f"{folder}/model.onnx", providers=["CPUExecutionProvider"]
        )
        self.inputs = [node.name for node in self.session.get_inputs()]

    def __call__(self, batch: dict[str, np.ndarray], precision: str) -> np.ndarray:
        feed = {name: batch[name].astype(np.int64) for name in self.inputs}
        return self.session.run(None, feed)[0].astype(np.float32)


class SequenceClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        runtime = "onnx" if "onnx" in context.artifacts else "model"
        folder = context.artifacts[runtime]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.logits = OnnxLogits(folder) if runtime == "onnx" else TorchLogits(folder)
        config = AutoConfig.from_pretrained(folder)
        self.names = [config.id2label[i] for i in range(config.num_labels)]
        model_config = context.model_config or {}
        self.max_length = int(model_config.get("max_length", 512))
        self.temperature = float(model_config.get("temperature", 1.0))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        params = params or {}
        precision = params.get("precision", "auto")
        batch_size = int(params.get("batch_size", BATCH_SIZE))
        texts = model_input["text"].astype(str).tolist()
        pairs = (
            model_input["text_pair"].astype(str).tolist() if "text_pair" in model_input else None
        )
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        probabilities = np.empty((len(texts), len(self.names)), dtype=np.float64)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer.pad(
                [{key: values[i] for key, values in encoded.items()} for i in rows],
                return_tensors="np",
            )
            logits = self.logits(dict(batch), precision).astype(np.float64) / self.temperature
            exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities[rows] = exp / exp.sum(axis=-1, keepdims=True)
        best = probabilities.argmax(axis=-1)
        return pd.DataFrame(
            {
                "label": [self.names[i] for i in best],
                "score": probabilities[np.arange(len(best)), best],
            }
        )


set_model(SequenceClassifier())
