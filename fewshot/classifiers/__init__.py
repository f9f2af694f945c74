"""Classifiers over a ``Support`` view: one file per method, a registry of names for the engine and benchmarks."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fewshot._core import construct
from fewshot.classifiers.base import ArraySupport, Classifier, Support
from fewshot.classifiers.fusion import FusionClassifier
from fewshot.classifiers.knn import KNNClassifier
from fewshot.classifiers.linear import LinearProbeClassifier
from fewshot.classifiers.logreg import DefaultLogisticRegressionClassifier, LogisticRegressionClassifier
from fewshot.classifiers.prototype import PrototypeClassifier, SimpleShotClassifier
from fewshot.classifiers.tip_adapter import TipAdapterFClassifier
from fewshot.classifiers.zeroshot import ZeroShotClassifier
from fewshot.errors import InvalidInputError

#: name → factory(**config). Later methods register here (fusion, linear, finetune ...).
CLASSIFIERS: dict[str, Callable[..., Classifier]] = {
    "prototype": PrototypeClassifier,
    "simpleshot": SimpleShotClassifier,
    "knn": KNNClassifier,
    "zero-shot": ZeroShotClassifier,
    "fusion": FusionClassifier,
    "linear": LinearProbeClassifier,
    "logreg": LogisticRegressionClassifier,                # the plain baselines every table carries
    "logreg-c1": DefaultLogisticRegressionClassifier,
    "tip-adapter": TipAdapterFClassifier,
    "finetune": TipAdapterFClassifier,   # deprecated name of "tip-adapter" (it never touches the encoder)
}


def make_classifier(name: str, **config: Any) -> Classifier:
    """Build the classifier registered as ``name``."""
    if name not in CLASSIFIERS:
        raise InvalidInputError(f"unknown classifier {name!r}; choose one of {sorted(CLASSIFIERS)}")
    return construct(CLASSIFIERS[name], f"classifier {name!r}", **config)


__all__ = ["ArraySupport", "Classifier", "Support", "CLASSIFIERS", "make_classifier", "PrototypeClassifier",
           "DefaultLogisticRegressionClassifier", "LogisticRegressionClassifier",
           "SimpleShotClassifier", "KNNClassifier", "ZeroShotClassifier",
           "FusionClassifier", "LinearProbeClassifier", "TipAdapterFClassifier"]
