"""The logged model's code: an MLflow pyfunc text classifier (MLflow "models from code").

MLflow copies this file into the model's artifacts, so `mlflow.pyfunc.load_model` needs
MLflow, torch and transformers only, never this project. It predicts in batches of similar
length (less padding) and, where the CPU or GPU computes bf16 natively, under bf16 autocast:
the speed the hardware allows. `params={"precision": "fp32"}` gives plain fp32. Inputs are
truncated to the `max_length` of training (the model config).
Input columns `text` and optional `text_pair`; output columns `label` (the label's name)
and `score` (its probability), like the transformers flavour's text-classification pipeline.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import set_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer

BATCH_SIZE = 64


def native_bf16() -> bool:
    """AMX or AVX512-BF16 on CPU, or a bf16-capable GPU: the rule of the project's
    `tasks.train.use_bf16("auto")`, repeated here because this file must run without the
    project (keep the two in step)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


class SequenceClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        folder = context.artifacts["model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, use_safetensors=True
        ).eval()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.bf16 = native_bf16()
        self.max_length = int((context.model_config or {}).get("max_length", 512))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        params = params or {}
        bf16 = self.bf16 and params.get("precision", "auto") != "fp32"
        batch_size = int(params.get("batch_size", BATCH_SIZE))
        texts = model_input["text"].astype(str).tolist()
        pairs = (
            model_input["text_pair"].astype(str).tolist() if "text_pair" in model_input else None
        )
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        probabilities = np.empty((len(texts), len(self.names)), dtype=np.float64)
        with torch.inference_mode(), torch.autocast(self.device, torch.bfloat16, enabled=bf16):
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = self.tokenizer.pad(
                    [{key: values[i] for key, values in encoded.items()} for i in rows],
                    return_tensors="pt",
                ).to(self.device)
                logits = self.model(**batch).logits.float()
                probabilities[rows] = torch.softmax(logits, dim=-1).cpu().numpy()
        best = probabilities.argmax(axis=-1)
        return pd.DataFrame(
            {
                "label": [self.names[i] for i in best],
                "score": probabilities[np.arange(len(best)), best],
            }
        )


set_model(SequenceClassifier())
