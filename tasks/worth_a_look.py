"""The held-out rows a model gets most confidently wrong: the first candidates for label
errors, and the quickest way to see what it has not learned.

Ranked by loss (-log of the probability given to the gold label), highest first; each row
names its place in the data file (`data_row`: the 1-based row under the header, as the data
checks' messages count) so that it can be found and fixed there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.evaluation import SplitResult


def most_confidently_wrong(result: SplitResult, label_names: list[str], limit: int) -> pd.DataFrame:
    """At most `limit` misclassified rows of a labelled split, highest loss first."""
    probabilities, labels = result.probabilities, result.labels
    predicted = probabilities.argmax(axis=1)
    rows = np.arange(len(labels))
    gold = probabilities[rows, labels]
    loss = -np.log(np.clip(gold, 1e-300, None))
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-loss[wrong], kind="stable")][:limit]
    columns = [c for c in ("text", "text_pair") if c in result.predictions.columns]
    table = result.predictions.iloc[chosen][columns].copy()
    names = np.asarray(label_names, dtype=object)
    table.insert(0, "data_row", chosen + 1)
    return table.assign(
        label=names[labels[chosen]],
        predicted=names[predicted[chosen]],
        probability_predicted=probabilities[chosen, predicted[chosen]].round(6),
        probability_label=gold[chosen].round(6),
        loss=loss[chosen].round(6),
    ).reset_index(drop=True)
