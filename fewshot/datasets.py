"""Data loaders for benchmarks and the CLI: CSV / JSONL text, image folders, CLINC150 and Omniglot.

Every loader returns a ``LabelledData`` (inputs + string labels). Malformed files raise
``fewshot.errors.DataFormatError`` with the file and (where there is one) the line number.

``load_dataset(spec)`` picks the loader from the path; a split of a multi-split file is named after a ``#``:
``data_full.json#train``, ``data_full.json#test+oos`` (CLINC150), ``images_evaluation.npz`` (Omniglot).
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fewshot.errors import DataFormatError

#: Column names accepted for the text and the label of a CSV file (Banking77 uses ``category``).
TEXT_COLUMNS = ("text",)
LABEL_COLUMNS = ("label", "category", "intent")
#: File suffixes treated as images inside an image folder (others are ignored).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
#: Label CLINC150 gives out-of-scope queries.
OOS_LABEL = "oos"
CLINC_SPLITS = ("train", "val", "test", "oos_train", "oos_val", "oos_test")


@dataclass
class LabelledData:
    """A labelled data set.

    Attributes:
        inputs: n texts (str), image paths (str) or PIL images.
        labels: n string labels, aligned with ``inputs``.
        source: where it came from (path and split), for messages and reports.
        kind: ``"text"`` or ``"image"``.
    """

    inputs: list[Any]
    labels: list[str]
    source: str = ""
    kind: str = "text"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise DataFormatError(f"{self.source}: {len(self.inputs)} inputs but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted(set(self.labels))

    def label_codes(self, classes: Sequence[str] | None = None) -> np.ndarray:
        """(n,) int64 index of each label in ``classes`` (default: ``self.classes``); -1 where absent."""
        lookup = {c: i for i, c in enumerate(self.classes if classes is None else classes)}
        return np.fromiter((lookup.get(lab, -1) for lab in self.labels), np.int64, len(self.labels))

    def without(self, label: str) -> LabelledData:
        """A copy without the items labelled ``label`` (e.g. CLINC150's ``oos``)."""
        keep = [i for i, lab in enumerate(self.labels) if lab != label]
        return LabelledData([self.inputs[i] for i in keep], [self.labels[i] for i in keep],
                            f"{self.source} (without {label})", self.kind, dict(self.meta))


def _check_label(label: Any, where: str) -> str:
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise DataFormatError(f"{where}: label must be a string, got {type(label).__name__}")
    label = str(label).strip()
    if not label:
        raise DataFormatError(f"{where}: empty label; every row needs a non-empty label")
    return label


def _check_text(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise DataFormatError(f"{where}: text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataFormatError(f"{where}: empty text; remove the row or fill in the text")
    return text


def _finish(inputs: list, labels: list[str], source: str, kind: str) -> LabelledData:
    if not labels:
        raise DataFormatError(f"{source}: no examples found; the file/folder is empty")
    return LabelledData(inputs, labels, source, kind)


def load_csv(path: str | os.PathLike, text_column: str | None = None,
             label_column: str | None = None) -> LabelledData:
    """CSV with a header row: a text column (``text``) and a label column (``label``, or Banking77's
    ``category``). Standard CSV quoting. Line numbers in errors are 1-based physical lines."""
    path = os.fspath(path)
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise DataFormatError(f"cannot open {path}: {exc}") from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(f"{path}: empty file; expected a header row 'text,label'") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataFormatError(f"{path}:1: cannot parse the header ({exc})") from None
        names = [h.strip().lstrip("\ufeff").lower() for h in header]
        t_name = text_column or next((c for c in TEXT_COLUMNS if c in names), None)
        l_name = label_column or next((c for c in LABEL_COLUMNS if c in names), None)
        for want, got, options in (("text", t_name, TEXT_COLUMNS), ("label", l_name, LABEL_COLUMNS)):
            if got is None or got.lower() not in names:
                raise DataFormatError(f"{path}:1: missing {want} column; header is {header!r}, expected one of "
                                      f"{list(options)}")
        assert t_name is not None and l_name is not None   # the loop above raised otherwise
        ti, li = names.index(t_name.lower()), names.index(l_name.lower())
        inputs, labels = [], []
        line = reader.line_num
        try:
            for row in reader:
                where = f"{path}:{line + 1}"
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataFormatError(f"{where}: expected {len(header)} fields ({','.join(header)}), got "
                                          f"{len(row)}; quote fields that contain commas")
                inputs.append(_check_text(row[ti], where))
                labels.append(_check_label(row[li], where))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataFormatError(f"{path}:{line + 1}: cannot parse CSV ({exc})") from None
    return _finish(inputs, labels, path, "text")


def load_jsonl(path: str | os.PathLike, text_key: str = "text", label_key: str = "label") -> LabelledData:
    """JSON lines, one object per line with ``text`` and ``label`` keys; blank lines are skipped."""
    path = os.fspath(path)
    inputs, labels = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for no, raw in enumerate(f, 1):
                where = f"{path}:{no}"
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise DataFormatError(f"{where}: expected a JSON object with '{text_key}' and '{label_key}'")
                for key in (text_key, label_key):
                    if key not in obj:
                        raise DataFormatError(f"{where}: missing key '{key}' (keys: {sorted(obj)})")
                inputs.append(_check_text(obj[text_key], where))
                labels.append(_check_label(obj[label_key], where))
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise DataFormatError(f"cannot open {path}: {exc}") from None
    return _finish(inputs, labels, path, "text")


def load_image_folder(path: str | os.PathLike, verify: bool = True) -> LabelledData:
    """An image folder with one sub-folder per class (``root/<label>/<image>``), like torchvision's
    ImageFolder. Files with other suffixes and hidden entries are ignored. With ``verify`` every image's
    header is checked, so an unreadable image fails here (naming the file) rather than mid-encoding.
    Inputs are the image paths (str), sorted by class, then file name."""
    root = Path(path)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory; an image folder needs one sub-folder per class")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataFormatError(f"{root}: no class sub-folders; put each class's images in root/<label>/")
    inputs, labels = [], []
    for d in class_dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(d).parts))
        if not files:
            raise DataFormatError(f"{d}: class folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for p in files:
            if verify:
                _verify_image(p)
            inputs.append(str(p))
            labels.append(_check_label(d.name, str(d)))
    return _finish(inputs, labels, str(root), "image")


def _verify_image(path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable image ({exc}); fix or remove the file") from None


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """Parse a JSON file; DataFormatError naming the file and line for bad JSON or an unreadable file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except OSError as exc:
        raise DataFormatError(f"cannot open {what + ' ' if what else ''}{path}: {exc}") from None


def load_descriptions(path: str | os.PathLike | None) -> dict[str, str]:
    """JSON file ``{label: description}`` → dict; typed errors for anything else."""
    if path is None:
        return {}
    obj = read_json(path, "descriptions file")
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                            for k, v in obj.items()):
        raise DataFormatError(f"{path}: expected a JSON object mapping each label to a non-empty description")
    return obj


def load_clinc150(path: str | os.PathLike, split: str = "train", include_oos: bool = False) -> LabelledData:
    """CLINC150 ``data_full.json``: ``split`` in train/val/test (150 in-scope intents) or oos_train/oos_val/
    oos_test (label ``oos``). ``include_oos`` appends the matching ``oos_<split>`` items."""
    path = os.fspath(path)
    if split not in CLINC_SPLITS:
        raise DataFormatError(f"{path}: unknown CLINC150 split {split!r}; choose one of {list(CLINC_SPLITS)}")
    obj = read_json(path)
    if not isinstance(obj, dict) or split not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise DataFormatError(f"{path}: no split {split!r} (found {keys}); expected CLINC150's data_full.json")
    splits = [split] + ([f"oos_{split}"] if include_oos and not split.startswith("oos") else [])
    inputs, labels = [], []
    for s in splits:
        items = obj.get(s)
        if not isinstance(items, list):
            raise DataFormatError(f"{path}: split {s!r} is missing or not a list")
        for i, item in enumerate(items):
            where = f"{path} [{s}][{i}]"
            if not (isinstance(item, list) and len(item) == 2):
                raise DataFormatError(f"{where}: expected a [text, intent] pair, got {item!r:.80}")
            inputs.append(_check_text(item[0], where))
            labels.append(_check_label(item[1], where))
    return _finish(inputs, labels, f"{path}#{split}{'+oos' if len(splits) > 1 else ''}", "text")


#: StackOverflow-20 (Xu et al. 2015): class id (1-20) → tag, as its README lists them
STACKOVERFLOW_TAGS: tuple[str, ...] = (
    "wordpress", "oracle", "svn", "apache", "excel", "matlab", "visual-studio", "cocoa", "osx", "bash", "spring",
    "hibernate", "scala", "sharepoint", "ajax", "qt", "drupal", "linq", "haskell", "magento")
STACKOVERFLOW_SPLITS = ("train", "test", "all")


def load_stackoverflow(path: str | os.PathLike, split: str = "train", per_class_train: int = 500) -> LabelledData:
    """StackOverflow-20 question titles: ``path`` is ``title_StackOverflow.txt`` (``label_StackOverflow.txt``
    beside it). fewshot's split (its SOURCE.md): per class, the first ``per_class_train`` lines in file order are
    ``train``, the rest ``test``; ``all`` is every line. Labels are the tags (``visual-studio``, ...)."""
    path = Path(path)
    if split not in STACKOVERFLOW_SPLITS:
        raise DataFormatError(f"{path}: unknown StackOverflow split {split!r}; choose one of "
                              f"{list(STACKOVERFLOW_SPLITS)}")
    label_path = path.with_name("label_StackOverflow.txt")
    try:
        titles = path.read_text(encoding="utf-8").splitlines()
        ids = label_path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"cannot read StackOverflow files {path} / {label_path}: {exc}") from None
    if len(titles) != len(ids):
        raise DataFormatError(f"{path} has {len(titles)} lines but {label_path} {len(ids)} labels")
    seen: dict[str, int] = {}
    inputs, labels = [], []
    for i, (title, raw) in enumerate(zip(titles, ids)):
        if not raw.isdigit() or not 1 <= int(raw) <= len(STACKOVERFLOW_TAGS):
            raise DataFormatError(f"{label_path} line {i + 1}: expected a class id 1-20, got {raw!r}")
        tag = STACKOVERFLOW_TAGS[int(raw) - 1]
        rank = seen[tag] = seen.get(tag, 0) + 1
        if split == "all" or (split == "train") == (rank <= per_class_train):
            inputs.append(_check_text(title, f"{path} line {i + 1}"))
            labels.append(tag)
    return _finish(inputs, labels, f"{path}#{split}", "text")


def load_omniglot(path: str | os.PathLike, as_arrays: bool = False) -> LabelledData:
    """Omniglot ``images_background.npz`` / ``images_evaluation.npz`` (``images`` bool (C, 20, 105, 105),
    True = white; ``labels`` (C, 20)). Inputs are PIL mode-"L" images (ink 0, paper 255), or (105, 105) uint8
    arrays with ``as_arrays``. Labels are global character ids ``char0001`` .. ``char1623``."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataFormatError(f"{path}: no 'images' array (found {z.files}); expected an Omniglot .npz")
            images = z["images"]
    except DataFormatError:
        raise
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"cannot read {path} as a NumPy .npz: {exc}") from None
    if images.ndim != 4:
        raise DataFormatError(f"{path}: 'images' has shape {images.shape}, expected (classes, drawers, H, W)")
    n_classes, n_drawers = images.shape[:2]
    offset = 965 if (n_classes == 659 or "evaluation" in Path(path).name) else 1
    pixels = np.where(images, np.uint8(255), np.uint8(0)) if images.dtype == bool else images.astype(np.uint8)
    pixels = pixels.reshape(n_classes * n_drawers, *images.shape[2:])
    if as_arrays:
        inputs: list[Any] = list(pixels)
    else:
        from PIL import Image
        inputs = [Image.fromarray(p) for p in pixels]  # uint8 2-D → mode "L"
    labels = [f"char{offset + c:04d}" for c in range(n_classes) for _ in range(n_drawers)]
    return _finish(inputs, labels, path, "image")


def banking77_sample() -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """The Banking77 sample shipped with the package (``fewshot/data/banking77_sample.csv``, CC BY 4.0: 10 intents,
    5 support texts each, held-back queries) as ({label: support texts}, [(query text, label)]), in file order."""
    from importlib import resources

    sample = resources.files("fewshot") / "data" / "banking77_sample.csv"
    # typeshed's Traversable.open has no newline= (the Path / zipfile.Path it returns accept it)
    with sample.open(encoding="utf-8", newline="") as f:  # type: ignore[call-overload]
        rows = list(csv.DictReader(f))
    support: dict[str, list[str]] = {}
    for r in rows:
        if r["split"] == "support":
            support.setdefault(r["label"], []).append(r["text"])
    return support, [(r["text"], r["label"]) for r in rows if r["split"] == "query"]


def split_spec(spec: str | os.PathLike) -> tuple[str, str | None]:
    """'file.json#test' → ('file.json', 'test'); a path without '#' → (path, None)."""
    spec = os.fspath(spec)
    if "#" in spec and not os.path.exists(spec):
        path, _, split = spec.rpartition("#")
        return path, split
    return spec, None


def load_dataset(spec: str | os.PathLike) -> LabelledData:
    """Load by path: a directory → image folder; ``.csv``; ``.jsonl``; ``.json`` → CLINC150-style splits
    (``PATH#train``, ``PATH#test``, ``PATH#test+oos``); ``.npz`` → Omniglot; ``title_StackOverflow.txt`` →
    StackOverflow-20 (``#train`` / ``#test`` / ``#all``)."""
    path, split = split_spec(spec)
    if not os.path.exists(path):
        raise DataFormatError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return load_image_folder(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return load_csv(path)
    if suffix == ".jsonl":
        return load_jsonl(path)
    if suffix == ".json":
        if split is None:
            raise DataFormatError(f"{path}: a multi-split JSON file needs a split, e.g. {path}#train or "
                                  f"{path}#test (add '+oos' for CLINC150's out-of-scope items)")
        base, plus, extra = split.partition("+")
        if plus and extra != OOS_LABEL:
            raise DataFormatError(f"{spec}: unknown split suffix '+{extra}'; only '+oos' is supported")
        return load_clinc150(path, base, include_oos=bool(plus))
    if suffix == ".npz":
        return load_omniglot(path)
    if Path(path).name == "title_StackOverflow.txt":
        return load_stackoverflow(path, split or "all")
    raise DataFormatError(f"{path}: unsupported data file; use CSV (text,label), JSONL (text/label keys), "
                          "an image folder, CLINC150 data_full.json#SPLIT, an Omniglot .npz or "
                          "title_StackOverflow.txt#SPLIT")
