"""Accuracy and F1 as GLUE's `glue`/`mrpc` metric defines them, loadable offline.

`evaluate.load("glue", "mrpc")` needs the Hugging Face Hub; this module is the same
computation (accuracy = mean of exact matches, F1 = scikit-learn's `f1_score`), loaded with
`evaluate.load(<path of this folder>)`. F1 is binary (positive class 1) by default, as
GLUE; `pos_label` names another positive class, and for more than two classes (or two with
no positive class) pass `average="macro"` (or micro, weighted).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = "Accuracy and F1 of class predictions, as the GLUE MRPC metric."
_KWARGS = """
Args:
    predictions: predicted class ids.
    references: true class ids.
    average: "binary" (default, GLUE) or, for more classes, "macro", "micro", "weighted".
    pos_label: the positive class id of binary F1 (default 1).
Returns:
    accuracy: share of exact matches.
    f1: F1 with the chosen averaging.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class AccuracyF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        return {
            "accuracy": float((predictions == references).mean()),
            "f1": float(f1_score(references, predictions, average=average, pos_label=pos_label)),
        }
