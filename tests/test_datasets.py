"""Loaders: formats that must load, and malformed files that must fail with file and line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fewshot.datasets import (
    LabelledData,
    load_clinc150,
    load_csv,
    load_dataset,
    load_image_folder,
    load_jsonl,
    load_omniglot,
)
from fewshot.errors import DataFormatError

SHARED = Path("/work/shared/data")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_text_label_and_quoting(tmp_path):
    p = write(tmp_path / "d.csv", 'text,label\nhello,greet\n"a, quoted, text",other\n\nbye,greet\n')
    d = load_csv(p)
    assert d.inputs == ["hello", "a, quoted, text", "bye"]
    assert d.labels == ["greet", "other", "greet"]
    assert d.classes == ["greet", "other"] and d.kind == "text"
    np.testing.assert_array_equal(d.label_codes(), [0, 1, 0])


def test_csv_banking77_category_column(tmp_path):
    d = load_dataset(write(tmp_path / "b.csv", "text,category\nwhere is my card?,card_arrival\n"))
    assert d.labels == ["card_arrival"]


@pytest.mark.parametrize("content, needle", [
    ("words,label\nhi,a\n", ":1: missing text column"),
    ("text,tag\nhi,a\n", ":1: missing label column"),
    ("text,label\nhi,a\nthere,\n", ":3: empty label"),
    ("text,label\nhi,a\n ,b\n", ":3: empty text"),
    ("text,label\nhi,a\nx,y,z\n", ":3: expected 2 fields"),
    ("", "empty file"),
    ("text,label\n", "no examples"),
])
def test_csv_malformed(tmp_path, content, needle):
    p = write(tmp_path / "bad.csv", content)
    with pytest.raises(DataFormatError) as err:
        load_csv(p)
    assert str(p) in str(err.value) and needle in str(err.value)


def test_csv_line_numbers_count_multiline_fields(tmp_path):
    p = write(tmp_path / "m.csv", 'text,label\n"two\nlines",a\nok,\n')
    with pytest.raises(DataFormatError, match=r"m\.csv:4: empty label"):
        load_csv(p)


def test_jsonl(tmp_path):
    p = write(tmp_path / "d.jsonl", '{"text": "hi", "label": "a"}\n\n{"text": "yo", "label": 3}\n')
    d = load_dataset(p)
    assert d.inputs == ["hi", "yo"] and d.labels == ["a", "3"]


@pytest.mark.parametrize("line, needle", [
    ("{not json", ":2: invalid JSON"),
    ('{"text": "x"}', ":2: missing key 'label'"),
    ('{"text": "x", "label": ""}', ":2: empty label"),
    ('["x", "a"]', ":2: expected a JSON object"),
    ('{"text": 5, "label": "a"}', ":2: text must be a string"),
])
def test_jsonl_malformed(tmp_path, line, needle):
    p = write(tmp_path / "bad.jsonl", '{"text": "ok", "label": "a"}\n' + line + "\n")
    with pytest.raises(DataFormatError) as err:
        load_jsonl(p)
    assert str(p) in str(err.value) and needle in str(err.value)


def make_folder(root: Path) -> Path:
    from PIL import Image

    for cls, shade in (("cat", 10), ("dog", 200)):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (6, 6), (shade, i, 0)).save(root / cls / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("ignored")
    (root / "README.md").write_text("ignored")
    return root


def test_image_folder(tmp_path):
    d = load_dataset(make_folder(tmp_path / "imgs"))
    assert d.kind == "image" and d.labels == ["cat", "cat", "dog", "dog"]
    assert all(s.endswith(".png") for s in d.inputs)


def test_image_folder_unreadable_image(tmp_path):
    root = make_folder(tmp_path / "imgs")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataFormatError, match="broken.png: unreadable image"):
        load_image_folder(root)


def test_image_folder_empty(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DataFormatError, match="no class sub-folders"):
        load_image_folder(tmp_path / "e")
    (tmp_path / "e" / "cls").mkdir()
    with pytest.raises(DataFormatError, match="holds no images"):
        load_image_folder(tmp_path / "e")


def clinc(tmp_path: Path, **override) -> Path:
    obj = {"train": [["book a flight", "book_flight"], ["play jazz", "play_music"]],
           "val": [["fly me", "book_flight"]], "test": [["fly to rome", "book_flight"]],
           "oos_train": [["what is love", "oos"]], "oos_val": [], "oos_test": [["how tall is a tree", "oos"]]}
    obj.update(override)
    p = tmp_path / "data_full.json"
    p.write_text(json.dumps(obj))
    return p


def test_clinc150_splits(tmp_path):
    p = clinc(tmp_path)
    assert load_clinc150(p, "train").labels == ["book_flight", "play_music"]
    d = load_dataset(f"{p}#test+oos")
    assert d.labels == ["book_flight", "oos"] and d.without("oos").labels == ["book_flight"]
    assert load_dataset(f"{p}#oos_test").labels == ["oos"]


def test_clinc150_malformed(tmp_path):
    p = clinc(tmp_path, train=[["ok", "a"], ["no label"]])
    with pytest.raises(DataFormatError, match=r"\[train\]\[1\]: expected a \[text, intent\] pair"):
        load_clinc150(p, "train")
    with pytest.raises(DataFormatError, match="needs a split"):
        load_dataset(p)
    with pytest.raises(DataFormatError, match="unknown CLINC150 split"):
        load_dataset(f"{p}#dev")
    bad = write(tmp_path / "broken.json", '{"train": [\n["a", "b"],,\n]}')
    with pytest.raises(DataFormatError, match=r"broken.json:2: invalid JSON"):
        load_clinc150(bad)


def test_omniglot_npz(tmp_path):
    images = np.ones((3, 20, 8, 8), bool)
    images[:, :, 2, 3] = False                       # one ink pixel
    p = tmp_path / "images_evaluation.npz"
    np.savez_compressed(p, images=images, labels=np.repeat(np.arange(3), 20).reshape(3, 20))
    d = load_omniglot(p)
    assert len(d) == 60 and d.labels[0] == "char0965" and d.labels[-1] == "char0967" and len(d.classes) == 3
    px = np.asarray(d.inputs[0])
    assert d.inputs[0].mode == "L" and px[2, 3] == 0 and px[0, 0] == 255
    arrays = load_omniglot(p, as_arrays=True)
    assert arrays.inputs[0].dtype == np.uint8 and arrays.inputs[0].shape == (8, 8)
    np.savez(tmp_path / "other.npz", pixels=images)
    with pytest.raises(DataFormatError, match="no 'images' array"):
        load_omniglot(tmp_path / "other.npz")


def test_unsupported_and_missing(tmp_path):
    with pytest.raises(DataFormatError, match="unsupported data file"):
        load_dataset(write(tmp_path / "x.txt", "hi"))
    with pytest.raises(DataFormatError, match="no such file"):
        load_dataset(tmp_path / "nope.csv")
    with pytest.raises(DataFormatError):
        LabelledData(["a"], [], "src")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")
def test_public_sets_counts():
    assert len(load_dataset(SHARED / "text/banking77/test.csv")) == 3080
    d = load_dataset(f"{SHARED}/text/clinc150/data_full.json#train")
    assert len(d) == 15000 and len(d.classes) == 150
