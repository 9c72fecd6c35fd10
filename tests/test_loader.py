"""Problem loading: JSONL and ToT csv, ranges, and errors that name the file and line."""

from pathlib import Path

import pytest

from ponder.tasks import load_problems, parse_range
from ponder.tasks.game24 import Game24Task

DATA = Path(__file__).parent / "data"


def test_jsonl_records_parse_with_the_task():
    problems = load_problems(DATA / "gsm8k_sample.jsonl", "gsm8k")
    assert [p.problem_id for p in problems] == ["0", "1", "g3"]  # blank line skipped
    assert [p.reference for p in problems] == ["72", "1234", "-2"]
    math = load_problems(DATA / "math_sample.jsonl", "math")
    assert [p.reference for p in math] == ["\\dfrac{3}{4}", "2\\sqrt{2}", "(-1,1)"]


def test_tot_csv_is_detected_by_header_and_ids_are_rows():
    problems = load_problems(DATA / "24_sample.csv", Game24Task())
    assert [(p.problem_id, p.problem) for p in problems] == \
           [("0", "1 1 4 6"), ("1", "1 1 11 11"), ("2", "1 1 3 8"), ("3", "4 5 6 10")]


def test_range_is_half_open_by_index():
    assert [p.problem_id for p in load_problems(DATA / "24_sample.csv", "game24", "1:3")] == ["1", "2"]
    assert [p.problem_id for p in load_problems(DATA / "24_sample.csv", "game24", "2:")] == ["2", "3"]
    assert [p.problem_id for p in load_problems(DATA / "24_sample.csv", "game24", (None, 1))] == ["0"]
    full = load_problems(Path(__file__).parents[1] / "ponder/tasks/data/24.csv", "game24", "900:1000")
    assert len(full) == 100 and full[0].problem == "4 5 6 10"


@pytest.mark.parametrize("text,expected", [("900:1000", slice(900, 1000)), (":5", slice(None, 5)),
                                           ("7", slice(7, 8)), (None, None)])
def test_parse_range(text, expected):
    assert parse_range(text) == expected


@pytest.mark.parametrize("text", ["a:b", "5:2", "-1:3", "1:2:3"])
def test_bad_range_names_the_value(text):
    with pytest.raises(ValueError, match="range"):
        parse_range(text)


def test_range_past_the_end_is_an_error():
    with pytest.raises(ValueError, match="selects nothing.*4 problems"):
        load_problems(DATA / "24_sample.csv", "game24", "10:20")


def test_malformed_jsonl_line_is_named():
    with pytest.raises(ValueError, match=r"bad_line\.jsonl:3: invalid JSON"):
        load_problems(DATA / "bad_line.jsonl", "game24")


def test_record_missing_fields_and_duplicates_are_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"id": 5}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: bad record"):
        load_problems(path, "gsm8k")
    path.write_text('{"id": "x", "problem": "1 2 3 4"}\n\n{"id": "x", "problem": "1 2 3 5"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:3: duplicate id 'x' \(first on line 1\)"):
        load_problems(path, "game24")
    path.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:1: expected a JSON object"):
        load_problems(path, "game24")


def test_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_problems(tmp_path / "nope.jsonl", "game24")
    with pytest.raises(IsADirectoryError, match=str(tmp_path.name)):
        load_problems(tmp_path, "game24")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(OSError, match="bin.jsonl"):
        load_problems(binary, "game24")
