"""CSV exports do not open in a spreadsheet as formulas (OWASP's CSV injection rule), and
read_studies gives back exactly what write_studies wrote (viewerkit.files)."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from viewerkit import Client
from viewerkit.errors import Reason, ValidationError
from viewerkit.fetch import fetch_studies
from viewerkit.files import STUDY_ID_COLUMNS, read_studies, write_studies
from viewerkit.frame import studies_to_arrow, to_pandas
from viewerkit.sandbox.server import Sandbox, running

# what a spreadsheet runs as a formula: = + - @ first (also after whitespace), a tab or CR first
RUNS = re.compile(r"^(?:[\t\r]|\s*[=+\-@])")

HOSTILE = [
    '=HYPERLINK("http://evil.example","open")',
    "=1+1",
    "+1 555 0100",
    "-2+3",
    "@SUM(A1:A2)",
    "\t=1+1",
    "\r=1+1",
    "\r\n=1",
    "  =cmd|' /C calc'!A0",
    "\n-1",
    "=",
    "-",
    "'=1+1",  # already looks neutralised: must still come back as it is
    "''@x",
    "'\t",
    "'tis the season",  # a quote, but nothing a spreadsheet runs: left alone
    "'",
    "a=b",
    "",
    "NA",
    "null",
    "True",
    "0012",
    'say "hi", then, go\nnext line',
    "  leading and trailing  ",
    "ünïcødé ✓ 𝄞",
    "\x00nul",
]


def cells(path: Path) -> list[dict[str, str]]:
    """The CSV as a spreadsheet's importer reads it: text by header."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def hostile_table() -> pa.Table:
    studies = []
    for n, text in enumerate(HOSTILE):
        studies.append({
            "studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.2.{n}",
            "studyDescription": text, "severity": "stat", "createdAt": "2026-11-27T16:30:43.197Z",
            "assignedTo": {"userId": f"usr_{n:032x}", "email": f"{text}@x.org", "firstName": text},
            "expressCustomer": {"expressCustomerId": f"cus_{n:032x}", "expressCustomerName": text},
            "createdByApiKey": {"apiKeyId": "0b3f6a55-0c6f-4c3e-9a4e-6b1f0c0d9e11", "description": text,
                                "isViewerEnabled": n % 2 == 0},
            "metadata": {"note": text, "=key": "plain"},
        })
    studies.append({"studyId": "stu_" + "f" * 32, "studyInstanceUid": "9.9"})  # nulls everywhere
    return studies_to_arrow(studies)


def test_the_issues_description_is_not_a_formula_in_the_csv_and_reads_back(tmp_path: Path) -> None:
    description = '=HYPERLINK("http://evil.example","open")'
    table = studies_to_arrow([{"studyId": "stu_" + "a" * 32, "studyInstanceUid": "1.2",
                               "studyDescription": description}])
    written = write_studies(table, tmp_path / "studies.csv")
    assert cells(written)[0]["study_description"] == "'" + description
    assert read_studies(written)["study_description"].tolist() == [description]


def test_no_text_cell_runs_in_a_spreadsheet_and_every_value_reads_back(tmp_path: Path) -> None:
    table = hostile_table()
    written = write_studies(table, tmp_path / "studies.csv")
    rows = cells(written)
    text_columns = ["study_description", "assigned_to_email", "assigned_to_first_name",
                    "express_customer_name", "created_by_api_key_description", "meta.note"]
    for row in rows:
        for name in text_columns:
            assert not RUNS.match(row[name]), (name, row[name])
    # neutralised means one leading quote, nothing else changed
    by_value = dict(zip(HOSTILE, rows, strict=False))
    assert by_value["=1+1"]["meta.note"] == "'=1+1"
    assert by_value["'=1+1"]["study_description"] == "''=1+1"
    assert by_value["'tis the season"]["study_description"] == "'tis the season"
    assert by_value["a=b"]["study_description"] == "a=b"
    back = read_studies(written)
    pd.testing.assert_frame_equal(back, to_pandas(table), check_exact=True)
    assert back["study_description"].tolist()[:len(HOSTILE)] == HOSTILE
    assert back["study_description"].isna().tolist() == [False] * len(HOSTILE) + [True]  # "" is not null


def test_ids_times_enums_and_booleans_are_never_altered(tmp_path: Path) -> None:
    table = hostile_table()
    rows = cells(write_studies(table, tmp_path / "studies.csv"))
    expected = to_pandas(table)
    for name in STUDY_ID_COLUMNS:
        assert [r[name] for r in rows] == expected[name].fillna("").tolist()
    assert {r["severity"] for r in rows} == {"stat", ""}
    assert rows[0]["created_at"] == "2026-11-27 16:30:43.197+00:00"
    assert [r["created_by_api_key_is_viewer_enabled"] for r in rows[:2]] == ["True", "False"]
    assert "meta.=key" in rows[0]  # a column name is not a cell a formula can be in


def test_keep_writes_every_cell_as_it_is_for_programs(tmp_path: Path) -> None:
    table = hostile_table()
    written = write_studies(table, tmp_path / "studies.csv", formulas="keep")
    assert [r["study_description"] for r in cells(written)][: len(HOSTILE)] == HOSTILE
    pd.testing.assert_frame_equal(read_studies(written, formulas="keep"), to_pandas(table), check_exact=True)


def test_parquet_is_written_as_is_and_reads_back_equal(tmp_path: Path) -> None:
    table = hostile_table()
    back = read_studies(write_studies(table, tmp_path / "studies.parquet"))
    pd.testing.assert_frame_equal(back, to_pandas(table), check_exact=True)


@pytest.mark.parametrize("name", ["study_id", "assigned_to_user_id", "express_customer_id"])
def test_an_id_that_starts_like_a_formula_is_refused_before_writing(tmp_path: Path, name: str) -> None:
    frame = to_pandas(hostile_table()).head(3)
    frame[name] = frame[name].astype(object)
    frame.loc[1, name] = "=1+1"
    out = tmp_path / "studies.csv"
    with pytest.raises(ValidationError) as caught:
        write_studies(frame, out)
    assert caught.value.failure_cases[["row", "field", "value", "reason"]].values.tolist() == [
        [1, name, "=1+1", Reason.STARTS_LIKE_FORMULA]]
    assert not out.exists()
    write_studies(frame, out, formulas="keep")  # for a program: as it is
    assert cells(out)[1][name] == "=1+1"


@pytest.mark.parametrize("formulas", ["neutralize", "", None, True])
def test_another_formulas_word_is_refused(tmp_path: Path, formulas: object) -> None:
    for call in (lambda: write_studies(hostile_table(), tmp_path / "x.csv", formulas=formulas),  # type: ignore[arg-type]
                 lambda: read_studies(tmp_path / "x.csv", formulas=formulas)):  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as caught:
            call()
        assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [["formulas", Reason.NOT_A_CHOICE]]
    assert not (tmp_path / "x.csv").exists()


def test_read_studies_names_each_cell_that_is_not_its_type(tmp_path: Path) -> None:
    path = tmp_path / "edited.csv"
    write_studies(hostile_table(), path)
    text = path.read_text(encoding="utf-8")
    rows = cells(path)
    rows[2]["created_at"] = "teatime"
    rows[4]["is_cancelled"] = "maybe"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    assert path.read_text(encoding="utf-8") != text
    with pytest.raises(ValidationError) as caught:
        read_studies(path)
    assert caught.value.failure_cases[["row", "field", "value", "reason"]].values.tolist() == [
        [2, "created_at", "teatime", Reason.NOT_A_TIME], [4, "is_cancelled", "maybe", Reason.NOT_BOOLEAN]]


def test_read_studies_reads_a_spreadsheets_spellings(tmp_path: Path) -> None:
    path = tmp_path / "saved.csv"
    path.write_text(
        "is_cancelled,study_id,study_instance_uid,created_at,study_description\n"
        f"TRUE,stu_{'a' * 32},1.2,2026-11-27T16:30:43.1972345Z,'=1+1\n"
        f"false,stu_{'b' * 32},1.3,2026-11-27 17:30:43.197+01:00,\n", encoding="utf-8-sig")  # with a BOM
    back = read_studies(path)
    assert back["is_cancelled"].tolist() == [True, False]
    assert back["created_at"].tolist() == [pd.Timestamp("2026-11-27T16:30:43.197Z")] * 2
    assert back["study_description"].tolist()[0] == "=1+1" and pd.isna(back["study_description"][1])


def test_read_studies_of_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file"):
        read_studies(tmp_path / "none.csv")


# --- tables from the real sandbox ---------------------------------------------------------------


def test_a_sandbox_table_with_hostile_text_round_trips_through_csv_and_parquet(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # references the API cannot change (a user's and a customer's names) are set in the
    # store between two runs of the same database: the server reads them when it starts
    db_path = tmp_path / "sandbox.db"
    with running(studies=300, seed=21, db_path=db_path) as first:
        key = first.api_key
    with sqlite3.connect(db_path, timeout=30) as db:
        db.execute("UPDATE users SET first_name = '=cmd', last_name = '@x'")
        db.execute("UPDATE customers SET name = '+1 Clinic'")
    db.close()
    sandbox = make_sandbox(db_path=db_path, api_key=key)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        ids = fetch_studies(client, progress=False)["study_id"].tolist()
        for n, text in enumerate(t for t in HOSTILE if t.strip()):
            client.update_study(ids[n], study_description=text,
                                metadata={"note": text, "empty": "", "site": "-North"})
        studies = fetch_studies(client, progress=False)
    assert (studies["study_description"] == HOSTILE[0]).sum() == 1
    assert (studies["assigned_to_first_name"] == "=cmd").any()
    assert (studies["express_customer_name"] == "+1 Clinic").any()
    assert (studies["meta.empty"] == "").sum() == len([t for t in HOSTILE if t.strip()])
    for name in ("studies.csv", "studies.parquet"):
        written = write_studies(studies, tmp_path / name)
        pd.testing.assert_frame_equal(read_studies(written), studies, check_exact=True)
    text_columns = [c for c in studies.columns if c.startswith("meta.") or c in (
        "study_description", "assigned_to_first_name", "assigned_to_last_name",
        "created_by_user_first_name", "created_by_user_last_name", "express_customer_name")]
    for row in cells(tmp_path / "studies.csv"):
        for name in text_columns:
            assert not RUNS.match(row[name]), (name, row[name])


def test_csv_times_in_a_time_zone_carry_their_offset_and_read_back(tmp_path: Path) -> None:
    # Berlin, 2026-10-25 00:30 and 01:30 UTC are both 02:30 local: the offset tells them apart
    when = ["2026-10-25T00:30:00.250Z", "2026-10-25T01:30:00.000Z", "2026-03-01T23:59:59.999Z"]
    table = studies_to_arrow([{"studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.{n}", "createdAt": t}
                              for n, t in enumerate(when)])
    written = write_studies(table, tmp_path / "studies.csv", tz="Europe/Berlin")
    assert [row["created_at"] for row in cells(written)] == [
        "2026-10-25 02:30:00.250+02:00", "2026-10-25 02:30:00.000+01:00", "2026-03-02 00:59:59.999+01:00"]
    pd.testing.assert_frame_equal(read_studies(written), to_pandas(table), check_exact=True)


def test_a_file_that_is_not_a_study_export_is_refused_naming_its_columns(tmp_path: Path) -> None:
    """(issue 11 walk) a CSV of other data read back as an all-null study table; a study
    export with a column added by hand dropped it silently."""
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        read_studies(other)
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [
        ["study_id", Reason.MISSING_COLUMN], ["study_instance_uid", Reason.MISSING_COLUMN],
        ["a", Reason.NOT_A_CHOICE], ["b", Reason.NOT_A_CHOICE]]
    edited = tmp_path / "edited.csv"
    edited.write_text(f"study_id,study_instance_uid,note\nstu_{'a' * 32},1.2,call back\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        read_studies(edited)
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [["note", Reason.NOT_A_CHOICE]]
