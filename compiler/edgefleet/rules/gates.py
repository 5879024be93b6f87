"""The accuracy-gate rule: what a model must declare before an artifact can be gated.

One definition for validation (E310, once per model and missing piece), the build's
resolution (E407) and the engine's own request check (E412 / E415). Pure.

* A class with `requires_accuracy_gate` (true by default) needs the model's evaluation
  data and its accuracy budget.
* A declared budget is always enforced, so it needs evaluation data even on a class
  that does not require a gate.
* `top1_accuracy` compares against labels, so the evaluation data must hold them
  (only a caller that has opened the data knows: `has_labels=None` skips it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgefleet.spec.model import AccuracyBudget

Missing = Literal["evaluation", "accuracy", "labels"]


@dataclass(frozen=True)
class GateProblem:
    missing: Missing
    message: str
    hint: str


EVALUATION_HINT = ("add data.evaluation (an npz with key 'input', and 'label' for accuracy metrics), or set "
                   "requires_accuracy_gate: false in the class if it may ship ungated models")
ACCURACY_HINT = ("add accuracy: {metric: top1_agreement, threshold: 0.98} (or another metric) to the model, or "
                 "set requires_accuracy_gate: false in the class if it may ship ungated models")


def gate_problems(requires_gate: bool, accuracy: AccuracyBudget | None, has_evaluation: bool,
                  has_labels: bool | None = None) -> list[GateProblem]:
    """Every reason the gate cannot run, most basic first (empty: it can run, or none is needed)."""
    out: list[GateProblem] = []
    if requires_gate and not has_evaluation:
        out.append(GateProblem("evaluation", "the model has no evaluation data for the accuracy gate the "
                                             "class requires", EVALUATION_HINT))
    if requires_gate and accuracy is None:
        out.append(GateProblem("accuracy", "the model has no accuracy budget, and the class requires "
                                           "an accuracy gate", ACCURACY_HINT))
    if not requires_gate and accuracy is not None and not has_evaluation:
        out.append(GateProblem("evaluation", "the model has no evaluation data for the accuracy budget "
                                             "it declares",
                               "add data.evaluation (an npz of real inputs, key 'input'), or remove spec.accuracy"))
    if accuracy is not None and accuracy.metric == "top1_accuracy" and has_evaluation and has_labels is False:
        out.append(GateProblem("labels", "metric top1_accuracy needs labels, and the evaluation data has none",
                               "save the labels as key 'label' in the evaluation npz, or use top1_agreement"))
    return out
