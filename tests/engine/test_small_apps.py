"""What a new user sees on small supports (issue 15, item 4), with the real MiniLM: the README's own snippet does
what its comments say, and in a small app acceptance follows the confidence shown."""
from __future__ import annotations

import numpy as np

from fewshot import FewShotEngine


def readme_engine(minilm) -> FewShotEngine:
    """The README's Python API example, as written there."""
    eng = FewShotEngine(encoder=minilm)
    eng.add_class("card_lost", examples=["I lost my card"], description="the customer lost a card")
    eng.add_class("exchange_rate", examples=["what is the euro rate?", "how many dollars for a pound"])
    eng.add_class("greeting", description="saying hello")       # zero-shot: a description alone
    eng.add_examples("card_lost", ["my card is gone"])
    return eng


def test_the_readme_example_rejects_a_recipe_and_keeps_its_own_intents(minilm):
    eng = readme_engine(minilm)
    assert eng.predict(["a recipe for cake"], reject=True)[0].label is None     # "label None when no class fits"
    assert eng.predict(["what's the weather tomorrow"], reject=True)[0].label is None
    kept = eng.predict(["where is my card?", "hi!", "euro to dollar rate", "my card was stolen"], reject=True)
    assert [p.label for p in kept] == ["card_lost", "greeting", "exchange_rate", "card_lost"]
    assert eng.openset.threshold_source_ == "loo+zero-shot"
    # too few held-out examples for a probability: the README says the score is 0.5 at the threshold
    assert eng.score_meaning.startswith("zero-shot")
    texts = ["a recipe for cake", "what's the weather tomorrow", "where is my card?", "hi!"]
    assert [p.score >= 0.5 for p in eng.predict(texts)] == [p.label is not None for p in eng.predict(texts, reject=True)]


PIZZA = {
    "order_pizza": ["I'd like to order a large pepperoni pizza", "can I get two margheritas", "order a pizza please"],
    "track_order": ["where is my order", "how long until my pizza arrives", "is my delivery on the way"],
    "cancel_order": ["cancel my order", "I don't want the pizza anymore", "please stop my order"],
    "opening_hours": ["when do you open", "are you open on sundays", "what time do you close tonight"],
    "payment": ["can I pay by card", "do you take cash", "is apple pay accepted"],
    "complaint": ["my pizza was burnt", "the order was wrong", "the delivery guy was rude"],
    "menu": ["do you have vegan options", "what toppings do you have", "is there a gluten free base"],
}
IN_SCOPE = {"send me a medium hawaiian pizza": "order_pizza", "has my food left the shop yet": "track_order",
            "please cancel the pizza I just ordered": "cancel_order", "are you open late on friday": "opening_hours",
            "do you accept visa": "payment", "my pizza arrived cold": "complaint",
            "what sizes do the pizzas come in": "menu", "I want to leave a tip for the driver": "tip"}
FAR_OFF = ["my laptop won't turn on", "what's the capital of france", "how do I reset my router",
           "translate good night into spanish", "who won the football world cup in 2014",
           "how many moons does jupiter have"]


def pizza_app(minilm) -> FewShotEngine:
    """7 intents with 3 examples each and one intent with only a description."""
    eng = FewShotEngine(encoder=minilm)
    for name, examples in PIZZA.items():
        eng.add_class(name, examples=examples)
    eng.add_class("tip", description="giving a tip to the delivery driver")
    return eng


def test_a_small_app_accepts_by_the_confidence_it_shows_and_rejects_far_off_text(minilm):
    eng = pizza_app(minilm)
    texts = list(IN_SCOPE) + FAR_OFF
    shown = eng.predict(texts)
    rejected = eng.predict(texts, reject=True)
    assert eng.score_meaning == "calibrated"
    # the same top label and confidence with and without rejection; rejection only blanks the label
    assert [p.label for p in shown] == [p.label if p.label is not None else s.label
                                        for p, s in zip(rejected, shown)]
    assert np.allclose([p.score for p in shown], [p.score for p in rejected])
    accepted = np.array([p.label is not None for p in rejected])
    scores = np.array([p.score for p in shown])
    # acceptance is monotone in the confidence shown: one score, one threshold
    assert not accepted.all() and accepted.any()
    assert scores[accepted].min() >= scores[~accepted].max()
    n = len(IN_SCOPE)
    labels = [p.label for p in rejected[:n]]
    assert sum(label == want for label, want in zip(labels, IN_SCOPE.values())) >= n - 2
    assert (~accepted[n:]).sum() >= len(FAR_OFF) - 1
    # a two-or-three-example class does not earn near-certainty
    assert max(p.score for p in shown) < 0.999
