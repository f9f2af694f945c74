"""Acceptance on real data from ../shared/data through the public engine API."""
import csv

import numpy as np
import pytest
from PIL import Image

from fewshot import FewShotEngine
from fewshot.classifiers import ArraySupport, PrototypeClassifier
from fewshot.templates import humanise_label


def read_banking(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


@pytest.fixture(scope="module")
def banking(shared_data, minilm):
    train_x, train_y = read_banking(shared_data / "text" / "banking77" / "train.csv")
    test_x, test_y = read_banking(shared_data / "text" / "banking77" / "test.csv")
    test_vectors = minilm.encode_text(test_x, batch_size=128)
    return train_x, train_y, test_vectors, np.array(test_y)


def test_banking77_ten_shot_engine(banking, minilm):
    train_x, train_y, test_vectors, test_y = banking
    rng = np.random.default_rng(0)
    engine = FewShotEngine(encoder=minilm)
    for label in sorted(set(train_y)):
        pool = [x for x, y in zip(train_x, train_y) if y == label]
        engine.add_class(label, examples=[pool[i] for i in rng.choice(len(pool), 10, replace=False)])
    preds = engine.predict_vectors(test_vectors)
    accuracy = np.mean([p.label == y for p, y in zip(preds, test_y)])
    print(f"Banking77 10-shot prototype accuracy: {accuracy:.4f}")
    assert accuracy >= 0.78


def test_banking77_zero_shot_from_label_names(banking, minilm):
    _, train_y, test_vectors, test_y = banking
    engine = FewShotEngine(encoder=minilm)
    for label in sorted(set(train_y)):
        engine.add_class(label, description=humanise_label(label))
    preds = engine.predict_vectors(test_vectors)
    accuracy = np.mean([p.label == y for p, y in zip(preds, test_y)])
    print(f"Banking77 zero-shot (label names) accuracy: {accuracy:.4f}")
    assert accuracy >= 0.55


def test_clinc150_score_ranks_in_scope_above_out_of_scope(shared_data, minilm):
    """Prediction.score (calibrated on support only) separates CLINC150 in-scope from out-of-scope queries. At the
    default threshold (keep 97% of in-scope inputs) reject=True costs at most 2 points of accuracy; asked to keep
    95%, it turns most out-of-scope queries away."""
    from sklearn.metrics import roc_auc_score

    from fewshot.datasets import load_clinc150

    path = shared_data / "text" / "clinc150" / "data_full.json"
    train, test, oos = (load_clinc150(path, s) for s in ("train", "test", "oos_test"))
    rng = np.random.default_rng(0)
    engine = FewShotEngine(encoder=minilm)
    for label in sorted(set(train.labels)):
        pool = [x for x, y in zip(train.inputs, train.labels) if y == label]
        engine.add_class(label, examples=[pool[i] for i in rng.choice(len(pool), 10, replace=False)])
    queries = minilm.encode_text(test.inputs + oos.inputs, batch_size=128)
    preds = engine.predict_vectors(queries, reject=True)
    is_in = np.r_[np.ones(len(test.inputs)), np.zeros(len(oos.inputs))]
    auroc = roc_auc_score(is_in, [p.score for p in preds])
    accuracy = np.mean([p.top_k[0][0] == y for p, y in zip(preds, test.labels)])
    kept_right = np.mean([p.label == y for p, y in zip(preds, test.labels)])  # rejected counts as wrong
    print(f"CLINC150 10-shot: accuracy {accuracy:.4f}, with rejection {kept_right:.4f}, AUROC {auroc:.4f}")
    assert accuracy >= 0.85 and auroc >= 0.95 and accuracy - kept_right <= 0.02
    engine.configure_openset(keep=0.95)
    preds = engine.predict_vectors(queries, reject=True)
    oos_rejected = np.mean([p.label is None for p in preds[len(test.inputs):]])
    print(f"keep=0.95: OOS rejected {oos_rejected:.3f}")
    assert oos_rejected >= 0.7


def test_omniglot_five_way_five_shot_effnet(shared_data, effnet):
    """Prototypes on frozen EfficientNet-Lite0 features: 40 evaluation-set classes, 300 episodes."""
    with np.load(shared_data / "images" / "omniglot" / "images_evaluation.npz", allow_pickle=False) as f:
        images = f["images"]
    rng = np.random.default_rng(0)
    classes = rng.choice(len(images), 40, replace=False)
    pil = [Image.fromarray(images[c, d].astype(np.uint8) * 255) for c in classes for d in range(20)]
    features = effnet.encode_images(pil, batch_size=64).reshape(40, 20, -1)
    correct = total = 0
    for _ in range(300):
        way = rng.choice(40, 5, replace=False)
        draws = np.stack([rng.permutation(20) for _ in way])
        support = features[way[:, None], draws[:, :5]]            # (5, 5, d)
        query = features[way[:, None], draws[:, 5:20]].reshape(-1, features.shape[-1])
        sup = ArraySupport(support.reshape(25, -1), np.repeat(np.arange(5), 5), 5)
        pred = PrototypeClassifier().fit(sup).scores(query).argmax(1)
        correct += int((pred == np.repeat(np.arange(5), 15)).sum())
        total += len(pred)
    accuracy = correct / total
    print(f"Omniglot eval 5-way 5-shot prototype accuracy (effnet-lite0): {accuracy:.4f}")
    assert accuracy >= 0.85
