"""Classifiers over a ``Support`` view: one file per method, a registry of names for the engine and benchmarks."""
from __future__ import annotations

from typing import Any, Callable

from fewshot.errors import InvalidInputError
from fewshot.classifiers.base import ArraySupport, Classifier, Support
from fewshot.classifiers.tip_adapter import TipAdapterFClassifier
from fewshot.classifiers.fusion import FusionClassifier
from fewshot.classifiers.knn import KNNClassifier
from fewshot.classifiers.linear import LinearProbeClassifier
from fewshot.classifiers.prototype import PrototypeClassifier, SimpleShotClassifier
from fewshot.classifiers.zeroshot import ZeroShotClassifier

#: name → factory(**config). Later methods register here (fusion, linear, finetune ...).
CLASSIFIERS: dict[str, Callable[..., Classifier]] = {
    "prototype": PrototypeClassifier,
    "simpleshot": SimpleShotClassifier,
    "knn": KNNClassifier,
    "zero-shot": ZeroShotClassifier,
    "fusion": FusionClassifier,
    "linear": LinearProbeClassifier,
    "tip-adapter": TipAdapterFClassifier,
    "finetune": TipAdapterFClassifier,   # deprecated name of "tip-adapter" (it never touches the encoder)
}


def make_classifier(name: str, **config: Any) -> Classifier:
    """Build the classifier registered as ``name``."""
    if name not in CLASSIFIERS:
        raise InvalidInputError(f"unknown classifier {name!r}; choose one of {sorted(CLASSIFIERS)}")
    return CLASSIFIERS[name](**config)


__all__ = ["ArraySupport", "Classifier", "Support", "CLASSIFIERS", "make_classifier", "PrototypeClassifier",
           "SimpleShotClassifier", "KNNClassifier", "ZeroShotClassifier",
           "FusionClassifier", "LinearProbeClassifier", "TipAdapterFClassifier"]
