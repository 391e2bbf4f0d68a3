"""The study table's ``metadata="map"`` shape (issue 8, item 9): one Arrow map column that
keeps null and ``{}`` apart and round-trips to the API body, on the fetcher, the single
retrieves and the cache, against a real sandbox."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from viewerkit import Client, StudyCache, ValidationError
from viewerkit.errors import Reason
from viewerkit.fetch import fetch_studies, fetch_studies_arrow, retrieve_studies
from viewerkit.frame import (
    ManyMetadataKeysWarning,
    compare_studies,
    concat_studies,
    diff_studies,
    from_pandas,
    metadata_table,
    study_to_api_body,
    to_pandas,
)
from viewerkit.sandbox.server import Sandbox
from viewerkit.schema import MANY_METADATA_KEYS, METADATA_MAP_TYPE, STUDY_SCHEMA

#: UID -> the metadata the study is created with: null, {}, one pair, the limits' edge
SHAPES: dict[str, dict[str, str] | None] = {
    "1.2.840.77.1": None,
    "1.2.840.77.2": {},
    "1.2.840.77.3": {"site": "North Pavilion"},
    "1.2.840.77.4": {f"k{i:02d}": "v" * 1000 for i in range(50)},
    "1.2.840.77.5": {"Site Name": "", "ünïcode ✓": "日本語", "a.b": "=1+1"},
}


@pytest.fixture
def server(make_sandbox: Any) -> Sandbox:
    sandbox: Sandbox = make_sandbox(studies=40, seed=77)
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        for uid, metadata in SHAPES.items():
            client.create_study(
                severity="high", study_description="CT HEAD", study_instance_uid=uid,
                metadata=metadata,
            )
    return sandbox


def _by_uid(df: pd.DataFrame) -> dict[str, Any]:
    chosen = df[df["study_instance_uid"].isin(list(SHAPES))]
    return dict(zip(chosen["study_instance_uid"], chosen["metadata"], strict=True))


def test_a_map_fetch_keeps_null_and_empty_apart_and_every_pair(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        as_map = fetch_studies(client, progress=False, metadata="map")
        as_columns = fetch_studies(client, progress=False)
        one_chain = fetch_studies(client, progress=False, metadata="map", partitioned=False)
    assert _by_uid(as_map) == SHAPES
    assert as_map.columns[-1] == "metadata" and as_map["metadata"].dtype == object
    assert not [c for c in as_map.columns if c.startswith("meta.")]
    assert list(as_map.columns[:-1]) == STUDY_SCHEMA.names
    # the same studies, the same pairs as the columns shape (which merges null and {})
    assert len(as_map) == len(as_columns) == len(one_chain)
    meta = [c for c in as_columns.columns if c.startswith("meta.")]
    merged = dict(zip(as_map["study_id"], as_map["metadata"], strict=True))
    for study_id, cells in zip(as_columns["study_id"], as_columns[meta].to_dict("records"), strict=True):
        pairs = {str(c)[len("meta."):]: v for c, v in cells.items() if not pd.isna(v)}
        assert pairs == (merged[study_id] or {})


def test_a_map_row_round_trips_to_the_api_body_and_back_unchanged(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        df = fetch_studies(client, progress=False, metadata="map")
        assert from_pandas(df).equals(fetch_studies_arrow(client, progress=False, metadata="map"))
        chosen = df[df["study_instance_uid"].isin(list(SHAPES))]
        for _, row in chosen.iterrows():
            body = study_to_api_body(row[["study_id", "metadata"]], call="update")
            assert body == {"metadata": SHAPES[row["study_instance_uid"]]}
            again = client.update_study(row["study_id"], metadata=body["metadata"])
            # the same map sent back changes nothing: updatedAt does not move
            assert pd.Timestamp(again["updatedAt"]) == row["updated_at"]
        # a cleared map (None) and an emptied one ({}) stay apart on the way back too
        target = chosen["study_id"].iloc[2]
        client.update_study(target, metadata=None)
        cleared = retrieve_studies(client, [target], progress=False, metadata="map")
        client.update_study(target, metadata={})
        emptied = retrieve_studies(client, [target], progress=False, metadata="map")
    assert cleared["metadata"].tolist() == [None]
    assert emptied["metadata"].tolist() == [{}]


def test_a_map_cache_records_metadata_changes_in_the_history(server: Sandbox, tmp_path: Path) -> None:
    cache = StudyCache(tmp_path)
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        cache.refresh(client, progress=False, metadata="map")
        assert _by_uid(cache.load(client)) == SHAPES
        ids = cache.load(client).set_index("study_instance_uid")["study_id"]
        client.update_study(ids["1.2.840.77.1"], metadata={})  # null -> {}
        client.update_study(ids["1.2.840.77.2"], metadata=None)  # {} -> null
        client.update_study(ids["1.2.840.77.3"], metadata={"site": "South", "bed": "4"})
        # studies are open (incomplete): the active refresh re-reads them
        summary = cache.refresh(client, mode="active", progress=False)
        assert cache.info(client)["metadata"] == "map"
        with pytest.raises(ValidationError) as caught:
            cache.refresh(client, progress=False, metadata="columns")
        full = cache.refresh(client, progress=False)  # the namespace's shape, nothing new
    assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [["metadata", Reason.CONFLICT]]
    assert (summary.changed, full.changed, full.new, full.gone) == (3, 0, 0, 0)
    loaded = cache.load(client)
    assert _by_uid(loaded)["1.2.840.77.1"] == {} and _by_uid(loaded)["1.2.840.77.2"] is None
    history = cache.history(client)
    changed = history[history["change"] == "changed"]
    assert sorted(changed["study_instance_uid"]) == ["1.2.840.77.1", "1.2.840.77.2", "1.2.840.77.3"]
    first = history[history["change"] == "new"].drop(columns=["observed_at", "change"])
    diff = diff_studies(first[first["study_id"].isin(changed["study_id"])], changed.drop(columns=["observed_at", "change"]))
    rows = diff[diff["field"].str.startswith("meta") | (diff["field"] == "metadata")]
    by_uid = dict(zip(ids.values, ids.index, strict=True))
    seen = sorted((by_uid[s], f, b, a) for s, f, b, a in rows.itertuples(index=False))
    assert seen == [
        ("1.2.840.77.1", "metadata", None, "{}"),
        ("1.2.840.77.2", "metadata", "{}", None),
        ("1.2.840.77.3", "meta.bed", None, "4"),
        ("1.2.840.77.3", "meta.site", "North Pavilion", "South"),
    ]


def test_a_bad_shape_is_refused_before_any_request(server: Sandbox, tmp_path: Path) -> None:
    before = len(server.requests())
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        for call in (
            lambda: fetch_studies(client, progress=False, metadata="dict"),  # type: ignore[arg-type]
            lambda: retrieve_studies(client, ["stu_" + "a" * 32], metadata="json"),  # type: ignore[arg-type]
            lambda: StudyCache(tmp_path).refresh(client, metadata="wide"),  # type: ignore[arg-type]
        ):
            with pytest.raises(ValidationError) as caught:
                call()
            assert caught.value.failure_cases[["field", "reason"]].values.tolist() == [
                ["metadata", Reason.NOT_A_CHOICE]
            ]
    assert len(server.requests()) == before


def _table(*maps: dict[str, str] | None) -> pa.Table:
    return pa.table(
        {
            "study_id": [f"stu_{i:032x}" for i in range(len(maps))],
            "study_instance_uid": [f"1.{i + 1}" for i in range(len(maps))],
            "metadata": pa.array(list(maps), METADATA_MAP_TYPE),
        }
    )


def test_bad_maps_in_a_dataframe_are_named_by_row_and_field() -> None:
    df = to_pandas(_table({"a": "1"}, None, {}))
    df.index = ["x", "y", "z"]
    bad: list[Any] = [{"": "1", "n": 3}, None, {f"k{i}": "v" for i in range(51)}]
    df["metadata"] = pd.Series(bad, index=df.index, dtype=object)
    with pytest.raises(ValidationError) as caught:
        from_pandas(df)
    cases = caught.value.failure_cases
    assert cases[["row", "field", "reason"]].values.tolist() == [
        ["x", "metadata", Reason.BAD_METADATA_KEY],
        ["x", "metadata", Reason.METADATA_VALUE_NOT_TEXT],
        ["z", "metadata", Reason.TOO_MANY_PAIRS],
    ]


def test_the_two_shapes_never_mix_silently() -> None:
    as_map = _table({"a": "1"})
    as_columns = pa.table({"study_id": ["stu_" + "0" * 32], "study_instance_uid": ["1.1"], "meta.a": ["1"]})
    for call in (
        lambda: concat_studies([as_map, as_columns]),
        lambda: compare_studies(as_columns, as_map),
        lambda: from_pandas(to_pandas(as_map).assign(**{"meta.b": "2"})),
    ):
        with pytest.raises(ValidationError, match="meta"):
            call()


def test_comparing_maps_sees_order_free_pairs_and_null_against_empty() -> None:
    before = _table({"a": "1", "b": "2"}, None, {}, {"a": "1"}, None)
    after = _table({"b": "2", "a": "1"}, None, {}, {"a": "2"}, {})
    changes = compare_studies(before, after)
    assert (len(changes.changed_ids), changes.unchanged) == (2, 3)
    assert diff_studies(before, after)[["field", "before", "after"]].values.tolist() == [
        ["meta.a", "1", "2"],
        ["metadata", None, "{}"],
    ]


def test_many_keys_as_columns_warn_and_suggest_the_map(server: Sandbox) -> None:
    with Client(api_key=server.api_key, base_url=server.base_url) as client:
        ids = fetch_studies(client, progress=False)["study_id"].tolist()
        for n, study_id in enumerate(ids[: MANY_METADATA_KEYS // 40 + 1]):
            client.update_study(study_id, metadata={f"key {n} {i}": "v" for i in range(41)})
        with pytest.warns(ManyMetadataKeysWarning, match='metadata="map"'):
            wide = fetch_studies(client, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            narrow = fetch_studies(client, progress=False, metadata="map")
    assert len([c for c in wide.columns if c.startswith("meta.")]) > MANY_METADATA_KEYS
    assert len(narrow.columns) == len(STUDY_SCHEMA) + 1


def test_metadata_table_gives_plain_names_whichever_the_shape(sandbox: Sandbox) -> None:
    with Client(api_key=sandbox.api_key, base_url=sandbox.base_url) as client:
        as_columns = fetch_studies(client, progress=False)
        as_map = fetch_studies(client, progress=False, metadata="map")
    plain = metadata_table(as_columns)
    assert list(plain.index) == list(as_columns.index)
    assert set(plain.columns) == {c[len("meta."):] for c in as_columns.columns if c.startswith("meta.")}
    from_map = metadata_table(as_map)
    left = plain.set_axis(as_columns["study_id"]).sort_index().sort_index(axis=1)
    right = from_map.set_axis(as_map["study_id"]).sort_index().sort_index(axis=1)
    pd.testing.assert_frame_equal(left.astype(object), right.astype(object))
    # the README's two ways to filter on a metadata key agree
    by_backticks = as_columns.query("`meta.site` == 'North Pavilion'")
    assert len(by_backticks) > 0
    assert by_backticks.index.equals(as_columns[plain.site == "North Pavilion"].index)
    # an Arrow table (0..n-1 index) gives the same cells
    arrow = metadata_table(from_pandas(as_columns))
    assert arrow.shape == plain.shape and arrow["site"].tolist() == plain["site"].tolist()
