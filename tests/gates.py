"""A gate that would pass, for the tests of what may keep a job's version from serving (--no-activate, a training
token): they activate a deliberately weak model first, so that the production recipe, fitted on the same digits,
passes the gate against it, and only the rule under test can hold the new version back."""

from __future__ import annotations

import re

# 300 neighbours, unweighted, out of a few hundred training digits: far behind the production recipe.
WEAK_KNN = {"n_neighbors": 300, "weights": "uniform"}
# What the trainer says when the gate compared on the same digits and found the winner better
# (digits.training.evaluation.beats, services.trainer.gate.judge).
GATE_PASSED = re.compile(r"accuracy (0\.\d{4}) > (0\.\d{4}) and weighted F1 \S+ >= \S+ on the same split "
                         r"\(vs (v\d+), on the same validation digits\)")
