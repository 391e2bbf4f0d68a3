"""Excel exports (viewerkit.files.write_studies / read_studies on .xlsx): times in the chosen
time zone and saying so, text never a formula, and every value back as it was, read with
openpyxl as a spreadsheet would."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from test_exports import HOSTILE, RUNS, hostile_table

from viewerkit import Client
from viewerkit.cli import main
from viewerkit.errors import Reason, ValidationError
from viewerkit.fetch import fetch_studies
from viewerkit.files import read_studies, write_studies
from viewerkit.frame import studies_to_arrow, to_pandas
from viewerkit.sandbox.server import Sandbox

TIME_COLUMNS = ("created_at", "updated_at", "cancelled_at")


def sheet_of(path: Path, name: str = "studies") -> openpyxl.worksheet.worksheet.Worksheet:
    return openpyxl.load_workbook(path)[name]


def by_header(sheet: openpyxl.worksheet.worksheet.Worksheet) -> dict[str, int]:
    return {cell.value: cell.column for cell in sheet[1]}


def times_table(utc: list[str]) -> pa.Table:
    return studies_to_arrow([
        {"studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.2.{n}", "createdAt": when,
         "updatedAt": when, "isCancelled": n % 2 == 1, "cancelledAt": when if n % 2 else None}
        for n, when in enumerate(utc)
    ])


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata"])
def test_every_value_reads_back_from_excel_in_any_time_zone(tmp_path: Path, tz: str) -> None:
    table = hostile_table()
    written = write_studies(table, tmp_path / "studies.xlsx", tz=tz)
    back = read_studies(written)
    pd.testing.assert_frame_equal(back, to_pandas(table), check_exact=True)
    assert back["study_description"].tolist()[: len(HOSTILE)] == HOSTILE  # "" and nulls apart
    assert back["study_description"].isna().tolist() == [False] * len(HOSTILE) + [True]


def test_time_columns_say_their_zone_and_hold_its_local_times(tmp_path: Path) -> None:
    table = times_table(["2026-11-27T16:30:43.197Z", "2026-07-01T00:15:00.000Z"])
    sheet = sheet_of(write_studies(table, tmp_path / "studies.xlsx", tz="Europe/Berlin"))
    columns = by_header(sheet)
    for name in TIME_COLUMNS:
        assert f"{name} (Europe/Berlin)" in columns and name not in columns
    created = columns["created_at (Europe/Berlin)"]
    # winter +01:00, summer +02:00; Excel keeps the milliseconds in the cell's value
    assert sheet.cell(2, created).value == dt.datetime(2026, 11, 27, 17, 30, 43, 197000)
    assert sheet.cell(3, created).value == dt.datetime(2026, 7, 1, 2, 15)
    assert sheet.cell(2, created).is_date and sheet.cell(2, created).value.tzinfo is None
    assert sheet.cell(2, columns["cancelled_at (Europe/Berlin)"]).value is None
    default = sheet_of(write_studies(table, tmp_path / "utc.xlsx"))
    assert default.cell(2, by_header(default)["created_at (UTC)"]).value == dt.datetime(
        2026, 11, 27, 16, 30, 43, 197000)


def test_the_hour_the_clocks_go_back_reads_back_as_the_same_instants(tmp_path: Path) -> None:
    # Berlin, 2026-10-25: 01:00 UTC is 03:00 CEST -> 02:00 CET, so 02:00-03:00 local happens twice
    utc = pd.date_range("2026-10-24T23:40Z", "2026-10-25T02:10Z", freq="10min")
    table = times_table([t.strftime("%Y-%m-%dT%H:%M:%S.000Z") for t in utc])
    written = write_studies(table, tmp_path / "studies.xlsx", tz="Europe/Berlin")
    sheet = sheet_of(written)
    created = by_header(sheet)["created_at (Europe/Berlin)"]
    shown = {(sheet.cell(row, created).value, sheet.cell(row, created).number_format)
             for row in range(2, len(utc) + 2)}
    assert (dt.datetime(2026, 10, 25, 2, 30), 'yyyy-mm-dd h:mm:ss "+02:00"') in shown
    assert (dt.datetime(2026, 10, 25, 2, 30), 'yyyy-mm-dd h:mm:ss "+01:00"') in shown
    assert (dt.datetime(2026, 10, 25, 1, 40), "yyyy-mm-dd h:mm:ss") in shown  # once only: no offset
    assert (dt.datetime(2026, 10, 25, 3, 0), "yyyy-mm-dd h:mm:ss") in shown
    back = read_studies(written)
    assert back["created_at"].tolist() == list(utc.as_unit("ms"))
    pd.testing.assert_frame_equal(back, to_pandas(table), check_exact=True)


def test_a_local_time_that_does_not_exist_or_is_not_a_time_is_named(tmp_path: Path) -> None:
    table = times_table(["2026-03-28T12:00:00.000Z"] * 4)
    written = write_studies(table, tmp_path / "studies.xlsx", tz="Europe/Berlin")
    book = openpyxl.load_workbook(written)
    sheet = book["studies"]
    columns = by_header(sheet)
    sheet.cell(2, columns["created_at (Europe/Berlin)"]).value = dt.datetime(2026, 3, 29, 2, 30)  # clocks skip it
    sheet.cell(3, columns["updated_at (Europe/Berlin)"]).value = "teatime"
    sheet.cell(4, columns["is_cancelled"]).value = "maybe"
    sheet.cell(5, columns["created_at (Europe/Berlin)"]).value = "2026-03-28T12:00:00Z"  # typed, with its zone
    book.save(written)
    with pytest.raises(ValidationError) as caught:
        read_studies(written)
    assert caught.value.failure_cases[["row", "field", "reason"]].values.tolist() == [
        [0, "created_at", Reason.NOT_A_TIME], [1, "updated_at", Reason.NOT_A_TIME],
        [2, "is_cancelled", Reason.NOT_BOOLEAN]]
    assert "does not exist in Europe/Berlin" in str(caught.value)


def test_text_is_never_a_formula_and_formula_looking_text_is_marked(tmp_path: Path) -> None:
    table = hostile_table()
    frame = to_pandas(table)
    frame["study_description"] = frame["study_description"].astype(object)
    frame.loc[0, "study_description"] = "#N/A"  # an Excel error word: still text
    for formulas in ("neutralise", "keep"):
        written = write_studies(frame, tmp_path / f"{formulas}.xlsx", formulas=formulas)
        with zipfile.ZipFile(written) as archive:
            assert "<f>" not in archive.read("xl/worksheets/sheet1.xml").decode()
        sheet = sheet_of(written)
        columns = by_header(sheet)
        texts = ["study_description", "assigned_to_email", "assigned_to_first_name",
                 "express_customer_name", "created_by_api_key_description", "meta.note"]
        for row in range(2, len(HOSTILE) + 2):
            for name in texts:
                cell, value = sheet.cell(row, columns[name]), frame.loc[row - 2, name]
                if not isinstance(value, str):  # a null
                    assert cell.value is None
                    continue
                assert cell.data_type == "s", (name, value)
                marked = formulas == "neutralise" and bool(RUNS.match(value))
                assert cell.quotePrefix == marked, (name, value)
        assert sheet.cell(2, columns["study_description"]).value == "#N/A"
        back = read_studies(written, formulas=formulas)  # values unchanged either way
        pd.testing.assert_frame_equal(back, frame.astype({"study_description": back["study_description"].dtype}),
                                      check_exact=True)


def test_enums_booleans_nulls_and_ids_are_cells_a_spreadsheet_reads(tmp_path: Path) -> None:
    written = write_studies(hostile_table(), tmp_path / "studies.xlsx")
    sheet = sheet_of(written)
    columns = by_header(sheet)
    assert sheet.cell(2, columns["severity"]).value == "stat"
    assert sheet.cell(2, columns["created_by_api_key_is_viewer_enabled"]).data_type == "b"
    assert [sheet.cell(r, columns["created_by_api_key_is_viewer_enabled"]).value for r in (2, 3)] == [True, False]
    last = len(HOSTILE) + 2  # the study with nulls everywhere
    assert sheet.cell(last, columns["study_description"]).value is None
    assert sheet.cell(last, columns["assigned_to_user_id"]).value is None
    assert sheet.cell(2 + HOSTILE.index(""), columns["study_description"]).value == ""  # empty text
    assert sheet.cell(2, columns["study_id"]).value == f"stu_{0:032x}"
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == f"A1:{sheet.cell(1, sheet.max_column).column_letter}{last}"
    about = {row[0]: row[1] for row in sheet_of(written, "about").iter_rows(values_only=True)}
    assert "time zone UTC" in about["Times"] and "read_studies" in about["Reading back"]
    # a NUL is not XML: Excel's escape, undone on reading
    nul = 2 + HOSTILE.index("\x00nul")
    assert sheet.cell(nul, columns["study_description"]).value == "_x0000_nul"


def test_text_that_looks_like_an_excel_escape_reads_back_as_it_is(tmp_path: Path) -> None:
    texts = ["_x0041_", "a_x000D_b", "_x005F_", "\x01_x0001_\x1f"]
    table = studies_to_arrow([{"studyId": f"stu_{n:032x}", "studyInstanceUid": f"1.{n}",
                               "studyDescription": text} for n, text in enumerate(texts)])
    back = read_studies(write_studies(table, tmp_path / "studies.xlsx"))
    assert back["study_description"].tolist() == texts


def test_a_cell_longer_than_excel_holds_is_refused_before_writing(tmp_path: Path) -> None:
    table = studies_to_arrow([
        {"studyId": f"stu_{0:032x}", "studyInstanceUid": "1.0", "studyDescription": "x" * 32_767},
        {"studyId": f"stu_{1:032x}", "studyInstanceUid": "1.1", "studyDescription": "x" * 32_768},
        {"studyId": f"stu_{2:032x}", "studyInstanceUid": "1.2", "studyDescription": "𝄞" * 16_384},  # 32,768 UTF-16 units
    ])
    out = tmp_path / "studies.xlsx"
    with pytest.raises(ValidationError) as caught:
        write_studies(table, out)
    assert caught.value.failure_cases[["row", "field", "reason"]].values.tolist() == [
        [1, "study_description", Reason.TOO_LONG], [2, "study_description", Reason.TOO_LONG]]
    assert not out.exists()
    back = read_studies(write_studies(table.slice(0, 1), out))
    assert back["study_description"].str.len().tolist() == [32_767]


@pytest.mark.parametrize(
    ("tz", "reason"),
    [("CEST", Reason.NOT_A_TIME_ZONE), ("", Reason.NOT_A_TIME_ZONE),
     ("Europe/Nowhere", Reason.NOT_A_TIME_ZONE), ("../etc/passwd", Reason.NOT_A_TIME_ZONE),
     ("localtime", Reason.NOT_A_TIME_ZONE), (1, Reason.WRONG_TYPE)],
)
def test_an_unknown_time_zone_is_refused_before_writing(tmp_path: Path, tz: object, reason: Reason) -> None:
    for name in ("studies.xlsx", "studies.csv"):
        with pytest.raises(ValidationError) as caught:
            write_studies(hostile_table(), tmp_path / name, tz=tz)  # type: ignore[arg-type]
        assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [["tz", reason]]
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_zone_in_a_header_is_named(tmp_path: Path) -> None:
    written = write_studies(times_table(["2026-11-27T16:30:43.197Z"]), tmp_path / "studies.xlsx")
    book = openpyxl.load_workbook(written)
    sheet = book["studies"]
    sheet.cell(1, by_header(sheet)["updated_at (UTC)"]).value = "updated_at (Mars/Olympus)"
    book.save(written)
    with pytest.raises(ValidationError) as caught:
        read_studies(written)
    assert caught.value.failure_cases[["field", "value", "reason"]].values.tolist() == [
        ["updated_at (Mars/Olympus)", "Mars/Olympus", Reason.NOT_A_TIME_ZONE]]


def test_a_sheet_edited_and_saved_by_a_spreadsheet_program_reads_back(tmp_path: Path) -> None:
    # openpyxl's full load and save: cells and styles rewritten, as another program would
    table = hostile_table()
    written = write_studies(table, tmp_path / "studies.xlsx", tz="America/St_Johns")
    openpyxl.load_workbook(written).save(written)
    expected = to_pandas(table)
    for name in expected.columns:  # openpyxl saves an empty text cell as an empty cell
        if name.startswith("meta.") or pd.api.types.is_string_dtype(expected[name]):
            expected[name] = expected[name].mask(expected[name] == "")
    assert expected["study_description"].isna().sum() == 2
    pd.testing.assert_frame_equal(read_studies(written), expected, check_exact=True)


# --- a real sandbox fetch -----------------------------------------------------------------------


def test_a_sandbox_fetch_round_trips_through_excel_and_csv_in_berlin_time(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path
) -> None:
    # 90 days of studies up to now: Berlin's clocks went back on 2026-10-25 within them
    sandbox = make_sandbox(studies=400, seed=11)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        ids = fetch_studies(client, progress=False)["study_id"].tolist()
        texts = [t for t in HOSTILE if t.strip()] + ["Ärztin Zoë · 検査 ✓"]
        for n, text in enumerate(texts):
            client.update_study(ids[n], study_description=text,
                                metadata={"note": text, "empty": "", "site": "North Pavilion"})
        client.cancel_study(ids[-1])
        studies = fetch_studies(client, progress=False)
    assert studies["cancelled_at"].notna().any() and studies["cancelled_at"].isna().any()
    assert studies["assigned_to_user_id"].isna().any() and studies["meta.note"].isna().any()
    assert (studies["meta.empty"] == "").sum() == len(texts)
    local = studies["created_at"].dt.tz_convert("Europe/Berlin").dt.tz_localize(None)
    twice = local.dt.tz_localize("Europe/Berlin", ambiguous="NaT").isna()
    for name in ("studies.xlsx", "studies.csv"):
        written = write_studies(studies, tmp_path / name, tz="Europe/Berlin")
        pd.testing.assert_frame_equal(read_studies(written), studies, check_exact=True)
    sheet = sheet_of(tmp_path / "studies.xlsx")
    columns = by_header(sheet)
    first = sheet.cell(2, columns["created_at (Europe/Berlin)"]).value
    assert first == local.iloc[0].to_pydatetime()
    formats = [sheet.cell(r, columns["created_at (Europe/Berlin)"]).number_format
               for r in range(2, len(studies) + 2)]
    assert [bool(re.search(r'"\+0[12]:00"', f)) for f in formats] == twice.tolist()
    csv_times = pd.read_csv(tmp_path / "studies.csv", dtype=str)["created_at"]
    assert csv_times.str.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0[12]:00$").all()


def test_cli_fetch_writes_excel_in_the_time_zone_asked(sandbox: Sandbox, tmp_path: Path) -> None:
    runner = CliRunner(env={"AVARA_API_KEY": sandbox.api_key, "AVARA_BASE_URL": sandbox.base_url})
    out = tmp_path / "stat.xlsx"
    result = runner.invoke(main, ["fetch", "--severity", "stat", "--out", str(out),
                                  "--tz", "America/New_York", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "written to" in result.output and "America/New_York" in result.output
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        expected = fetch_studies(client, severity="stat", progress=False)
    back = read_studies(out)
    order = ["study_id"]
    pd.testing.assert_frame_equal(back.sort_values(order).reset_index(drop=True),
                                  expected.sort_values(order).reset_index(drop=True), check_exact=True)
    assert "created_at (America/New_York)" in by_header(sheet_of(out))


def test_cli_fetch_refuses_an_unknown_time_zone_before_fetching(tmp_path: Path) -> None:
    runner = CliRunner(env={"AVARA_API_KEY": "sk-unused", "AVARA_BASE_URL": "http://127.0.0.1:9"})
    out = tmp_path / "studies.xlsx"
    result = runner.invoke(main, ["fetch", "--out", str(out), "--tz", "CEST", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and "field tz" in result.output
    assert "connect" not in result.output.lower(), "the fetch was attempted"
    assert not out.exists()


@pytest.mark.parametrize("name", ["studies.xlsx", "studies.csv"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_an_empty_table_round_trips(tmp_path: Path, name: str, tz: str) -> None:
    from viewerkit.frame import empty_studies

    back = read_studies(write_studies(empty_studies(), tmp_path / name, tz=tz))
    pd.testing.assert_frame_equal(back, to_pandas(empty_studies()), check_exact=True)
