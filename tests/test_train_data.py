"""Training data readers: formats, column names, pair/triplet detection, bad rows named by line number."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from e5v.cli import cli
from e5v.train.data import Columns, DataError, read_examples, resolve_columns


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_triplets(tmp_path):
    rows = [{"sent0": f"a{i}", "sent1": f"b{i}", "hard_neg": f"c{i}"} for i in range(3)]
    path = write(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    examples = read_examples(path)
    assert [(e.line, e.anchor, e.positive, e.negative) for e in examples] == [
        (1, "a0", "b0", "c0"), (2, "a1", "b1", "c1"), (3, "a2", "b2", "c2")]


def test_csv_quoted_multiline_field_keeps_line_numbers(tmp_path):
    path = write(tmp_path / "d.csv", 'sent0,sent1,hard_neg\n"x, y",b,c\n"two\nlines",b,c\nlast,b,\n')
    with pytest.raises(DataError) as err:
        read_examples(path)
    # Row 1 is on line 2, row 2 spans lines 3-4, row 3 (empty hard_neg) starts on line 5.
    assert "line 5: column 'hard_neg' is empty" in str(err.value)
    assert "1 bad row" in str(err.value)


def test_tsv_and_custom_columns_pairs(tmp_path):
    path = write(tmp_path / "d.tsv", "query\tdoc\nq1\td1\nq2\td2\n")
    columns = resolve_columns(path, "query", "doc", "hard_neg", negative_given=False)
    assert columns == Columns("query", "doc", None)  # no hard_neg column -> pairs
    examples = read_examples(path, columns)
    assert [(e.anchor, e.positive, e.negative) for e in examples] == [("q1", "d1", None), ("q2", "d2", None)]


def test_triplets_detected_when_negative_column_present(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps({"sent0": "a", "sent1": "b", "hard_neg": "c"}) + "\n")
    assert resolve_columns(path, "sent0", "sent1", "hard_neg", negative_given=False).negative == "hard_neg"


def test_named_negative_column_must_exist(tmp_path):
    path = write(tmp_path / "d.csv", "sent0,sent1\na,b\n")
    columns = resolve_columns(path, "sent0", "sent1", "neg", negative_given=True)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['neg'\]"):
        read_examples(path, columns)


def test_bad_jsonl_rows_all_reported_with_lines(tmp_path):
    lines = [
        json.dumps({"sent0": "a", "sent1": "b", "hard_neg": "c"}),
        "{not json",
        json.dumps({"sent0": "a", "hard_neg": "c"}),
        json.dumps(["a", "b", "c"]),
        "",
        json.dumps({"sent0": "a", "sent1": 3, "hard_neg": "c"}),
        json.dumps({"sent0": "  ", "sent1": "b", "hard_neg": "c"}),
    ]
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        read_examples(path)
    message = str(err.value)
    assert "5 bad row(s)" in message
    for expected in ("line 2: invalid JSON", "line 3: missing column 'sent1'", "line 4: expected a JSON object",
                     "line 6: column 'sent1' must be a string", "line 7: column 'sent0' is empty"):
        assert expected in message
    assert "line 1:" not in message


def test_many_bad_rows_are_summarised(tmp_path):
    path = write(tmp_path / "d.csv", "sent0,sent1\n" + "a,\n" * 25)
    with pytest.raises(DataError, match=r"25 bad row\(s\)[\s\S]*and 15 more"):
        read_examples(path, Columns("sent0", "sent1", None))


def test_wrong_field_count_and_unknown_format(tmp_path):
    path = write(tmp_path / "d.csv", "sent0,sent1\na,b,c\n")
    with pytest.raises(DataError, match="line 2: expected 2 fields, found 3"):
        read_examples(path, Columns("sent0", "sent1", None))
    with pytest.raises(DataError, match="unknown data format"):
        read_examples(write(tmp_path / "d.parquet", "x"))
    with pytest.raises(DataError, match="no training rows"):
        read_examples(write(tmp_path / "e.jsonl", "\n"))


def test_cli_reports_bad_rows_before_loading_a_model(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps({"sent0": "a", "sent1": ""}) + "\n")
    result = CliRunner().invoke(cli, ["train", "--model", str(tmp_path / "nowhere"), "--data", str(path),
                                       "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "line 1: column 'sent1' is empty" in result.output
    assert not (tmp_path / "out").exists()


def test_a_csv_field_over_the_csv_limit_is_a_data_error_naming_the_line(tmp_path):
    path = write(tmp_path / "d.csv", "sent0,sent1,hard_neg\na,b,c\n" + "x" * 140_000 + ",b,c\nd,e,f\n")
    with pytest.raises(DataError, match=r"line 3: malformed row: field larger than field limit"):
        read_examples(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_invalid_utf8_is_a_data_error_not_a_decode_crash(tmp_path, suffix):
    good = "sent0,sent1,hard_neg\na,b,c\n" if suffix == ".csv" else '{"sent0": "a", "sent1": "b", "hard_neg": "c"}\n'
    path = tmp_path / f"d{suffix}"
    path.write_bytes(good.encode() + b"\xff\xfe broken \xc3\n")
    with pytest.raises(DataError, match="invalid UTF-8"):
        read_examples(path)


def test_resume_refuses_a_training_state_that_would_run_code(tmp_path):
    """training_state.pt is read with torch.load(weights_only=True): a pickle that runs code is refused."""
    import torch

    from e5v.errors import ModelLoadError
    from e5v.train.checkpoint import STATE_FILE, TENSORS_FILE, load_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    checkpoint = tmp_path / "step-00000003"
    checkpoint.mkdir()
    (checkpoint / STATE_FILE).write_text(json.dumps({"step": 3}))
    torch.save({"optimizer": Evil(), "rng": torch.get_rng_state()}, checkpoint / TENSORS_FILE)
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_checkpoint(None, None, checkpoint)
    assert not marker.exists()
