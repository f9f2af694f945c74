"""Input files (expansion, validation, bounded blocks) and the all-or-nothing output folder."""
from __future__ import annotations

import gzip
import os
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fewshot.batch.io import (
    SUCCESS,
    Columns,
    ParquetParts,
    StagedOutput,
    common_id_type,
    expand_inputs,
    inspect_file,
    output_counts,
    read_blocks,
    read_success,
)
from fewshot.batch.jobs import plan_inputs
from fewshot.errors import DataFormatError, InputFileError, InvalidInputError
from tests.batch.conftest import write_corpus


def test_expand_inputs_globs_folders_order_and_duplicates(tmp_path):
    for name in ("b.csv", "a.csv", "c.jsonl", "d.parquet"):
        write_corpus(tmp_path / name, ["x"])
    (tmp_path / "_SUCCESS").write_text("{}")
    (tmp_path / "notes.txt").write_text("not data")
    files = expand_inputs([str(tmp_path / "*.csv"), str(tmp_path), str(tmp_path / "a.csv")])
    assert [os.path.basename(f.path) for f in files] == ["a.csv", "b.csv", "c.jsonl", "d.parquet"]
    assert [f.format for f in files] == ["csv", "csv", "jsonl", "parquet"]
    assert [f.index for f in files] == [0, 1, 2, 3]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nothing-*.csv", "no file matches"),
    (lambda p: p / "missing.csv", "no such file"),
    (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "unknown input format"),
    (lambda p: (p / "empty.csv").write_bytes(b"") or p / "empty.csv", r"is empty \(0 bytes\)"),
    (lambda p: (p / "dir.csv").mkdir() or p / "dir.csv", "folder"),
])
def test_expand_inputs_names_what_is_wrong(tmp_path, make, message):
    target = make(tmp_path)
    with pytest.raises(DataFormatError, match=message) as err:
        expand_inputs([str(target)])
    assert os.path.basename(str(target)) in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_named(tmp_path):
    path = write_corpus(tmp_path / "secret.csv", ["x"])
    path.chmod(0)
    with pytest.raises(DataFormatError, match="cannot be read") as err:
        expand_inputs([str(path)])
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name, content, message", [
    ("header.csv", "text,id\n", "no rows"),
    ("blank.jsonl", "\n\n", "no rows"),
    ("garbage.parquet", "this is not parquet", "cannot be read as PARQUET"),
    ("garbage.jsonl", '{"text": "ok"}\n{not json\n', "line 2 is not valid JSON"),
    ("binary.csv", b"text\n\xff\xfe\x00", "cannot be read as CSV"),
    ("nulls.csv", "text,id\nfine,1\n,2\n", "row 2 has no 'text' value"),
    ("nulls.jsonl", '{"text": "a"}\n{"text": null}\n', "row 2 has no 'text' value"),
    ("missing-key.jsonl", '{"text": "a"}\n{"other": 1}\n', "row 2 has no 'text' value"),
    ("no-column.csv", "body,id\nx,1\n", "no text column 'text'"),
    ("numbers.jsonl", '{"text": 5}\n', "holds int64"),
])
def test_inspect_file_rejects_bad_content_naming_file_and_row(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    f = expand_inputs([str(tmp_path / name)])[0]
    with pytest.raises(InputFileError, match=message) as err:
        inspect_file(f, Columns("text"))
    assert str(tmp_path / name) in str(err.value)
    assert err.value.path == str(tmp_path / name) and isinstance(err.value, DataFormatError)
    copy = pickle.loads(pickle.dumps(err.value))   # as it crosses from a Ray worker
    assert type(copy) is InputFileError and copy.path == err.value.path and str(copy) == str(err.value)


def test_inspect_counts_rows_types_and_null_parquet(tmp_path):
    ok = write_corpus(tmp_path / "ok.parquet", ["a", "b", "c"], ids=[10, 11, 12])
    info = inspect_file(expand_inputs([str(ok)])[0], Columns("text", "id"))
    assert info.rows == 3 and info.id_type == pa.int64()
    bad = write_corpus(tmp_path / "bad.parquet", ["a", None], ids=[1, 2])
    with pytest.raises(DataFormatError, match="row 2"):
        inspect_file(expand_inputs([str(bad)])[0], Columns("text", "id"))
    no_id = write_corpus(tmp_path / "noid.parquet", ["a", "b"], ids=[1, None])
    with pytest.raises(DataFormatError, match="row 2 has no 'id' value"):
        inspect_file(expand_inputs([str(no_id)])[0], Columns("text", "id"))
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "id": 1}\n{"text": "b", "id": "two"}\n')
    with pytest.raises(DataFormatError, match="row 2 .*expected an integer"):
        inspect_file(expand_inputs([str(mixed)])[0], Columns("text", "id"))
    floats = write_corpus(tmp_path / "f.parquet", ["a"], ids=[1.5])
    with pytest.raises(DataFormatError, match="integers or strings"):
        inspect_file(expand_inputs([str(floats)])[0], Columns("text", "id"))


def test_id_types_must_agree_across_files(tmp_path):
    a = write_corpus(tmp_path / "a.parquet", ["x"], ids=[1])
    b = write_corpus(tmp_path / "b.csv", ["y"], ids=[2])       # CSV ids are strings
    files = expand_inputs([str(a), str(b)])
    infos = [inspect_file(f, Columns("text", "id")) for f in files]
    with pytest.raises(DataFormatError, match="different types"):
        common_id_type(files, infos, Columns("text", "id"))


def test_csv_quoted_newlines_stay_and_an_empty_field_is_missing(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,id\n"two\nlines",1\n"a, b",2\n\nplain,3\n')
    plan = plan_inputs([path])
    blocks = list(read_blocks(plan.files[0], plan.columns, id_type=plan.id_type))
    assert blocks[0].column("input").to_pylist() == ["two\nlines", "a, b", "plain"]
    assert blocks[0].column("id").to_pylist() == ["1", "2", "3"]
    path.write_text('text,id\nfine,1\n"",2\n')
    with pytest.raises(DataFormatError, match="row 2 has no 'text' value"):
        plan_inputs([path])
    path.write_text('text,id\nfine,1\nshort\n')
    with pytest.raises(DataFormatError, match="row 2 has 1 fields"):
        plan_inputs([path])


def test_read_blocks_are_bounded_and_number_rows_by_position(tmp_path):
    path = write_corpus(tmp_path / "a.csv", [f"t{i}" for i in range(1000)])
    f = expand_inputs([str(path)])[0]
    blocks = list(read_blocks(f, Columns("text"), first_id=500, block_rows=64))
    assert [b.num_rows for b in blocks] == [64] * 15 + [40]
    table = pa.concat_tables(blocks)
    assert table.column("id").to_pylist() == list(range(500, 1500))
    assert table.column("input").to_pylist() == [f"t{i}" for i in range(1000)]
    assert set(table.column("_file").to_pylist()) == {0}


def test_compressed_and_jsonl_inputs(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"text": "hello", "id": "x1"}\n{"text": "world", "id": "x2", "extra": [1]}\n')
    plan = plan_inputs([str(path)])
    assert plan.columns == Columns("text", "id") and plan.id_type == pa.string() and plan.rows == 2
    (block,) = read_blocks(plan.files[0], plan.columns, id_type=plan.id_type)
    assert block.column("id").to_pylist() == ["x1", "x2"]
    assert block.column("input").to_pylist() == ["hello", "world"]


def test_plan_numbers_files_in_order_and_id_column_auto(tmp_path):
    a = write_corpus(tmp_path / "a.csv", ["x", "y"])
    b = write_corpus(tmp_path / "b.jsonl", ["z"])
    plan = plan_inputs([str(a), str(b)])
    assert plan.columns.id is None and plan.offsets == [0, 2] and plan.rows == 3
    c = write_corpus(tmp_path / "c.csv", ["x"], ids=["k"])
    assert plan_inputs([str(c)]).columns.id == "id"               # the column 'id' is picked up
    assert plan_inputs([str(c)], id_column="").columns.id is None  # '' forces positions
    with pytest.raises(DataFormatError, match="no id column 'key'"):
        plan_inputs([str(c)], id_column="key")


def test_staged_output_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with StagedOutput(out) as staged:
        (staged.path / "part.parquet").write_bytes(b"x")
        assert staged.path.name.startswith(".out.incomplete-") and not out.exists()
        staged.commit({"kind": "classify"})
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "part.parquet"]
    assert read_success(out, "classify") == {"kind": "classify"}
    with pytest.raises(InvalidInputError, match="not empty"):
        StagedOutput(out)
    with pytest.raises(RuntimeError), StagedOutput(out, overwrite=True) as staged:
        (staged.path / "new.parquet").write_bytes(b"y")
        raise RuntimeError("the job failed")
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "part.parquet"]   # the old output is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]                     # no staging left behind
    with StagedOutput(out, overwrite=True) as staged:
        (staged.path / "new.parquet").write_bytes(b"y")
        staged.commit({"kind": "embed"})
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS, "new.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(DataFormatError, match="not a fewshot classify output"):
        read_success(out, "classify")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataFormatError, match="no _SUCCESS"):
        read_success(tmp_path / "half", "embed")


def test_parquet_parts_roll_files_and_count(tmp_path):
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])
    parts = ParquetParts(tmp_path, schema, rows_per_file=250, row_group_rows=100)
    for start in range(0, 600, 70):
        n = min(70, 600 - start)
        parts.write(pa.table({"id": list(range(start, start + n)),
                              "label": [None if i % 3 == 0 else "a" for i in range(start, start + n)]},
                             schema=schema))
    assert parts.close() == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    rows, nulls, names = output_counts(tmp_path, "label")
    assert rows == 600 and nulls == 200 and len(names) == 3
    assert pq.read_table(tmp_path).column("id").to_pylist() == list(range(600))
