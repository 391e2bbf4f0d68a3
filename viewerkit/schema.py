"""The vocabulary of the Avara Viewer Studies API: enums, the one rule table, the Arrow schema.

``RULES`` is every rule of the wire contract (identifier formats, the DICOM UID, the enums,
text, metadata limits, booleans, the page limit, the cursor), each a :class:`Rule` that knows
its :class:`~viewerkit.errors.Reason` and checks one value (``check``) or a whole column
(``check_column``: a pyarrow array or a pandas Series, vectorised with ``pyarrow.compute``,
every failure at once). Which field obeys which rule is said once too: ``FIELDS`` (the
request fields of create / update / retrieve / cancel), ``LIST_FILTERS`` (the list query)
and ``STUDY_COLUMNS`` (the study table's writable columns and identifiers). The client's
argument checks, ``list_query_params``, the sandbox's request validation and
``viewerkit.frame.from_pandas`` all use them, so they refuse exactly the same values.

``STUDY_SCHEMA`` holds the columns every path (fetched, cached, refreshed, built from the
sandbox) returns, before the ``meta.*`` columns, which are one string column per metadata
key seen.

>>> is_study_id("stu_" + "a" * 32), is_dicom_uid("1.2.840.10008.5.1.4.1.1.2")
(True, True)
>>> is_dicom_uid("1.02.3")
False
>>> [(f.row, f.reason.name) for f in RULES["severity"].check_column(["stat", "urgent", None])]
[(1, 'NOT_SEVERITY')]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, Union

import numpy as np
import pyarrow as pa

from viewerkit.errors import SECRET_FIELDS, Reason, ValidationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SEVERITIES",
    "VIEWER_STATUSES",
    "Severity",
    "ViewerStatus",
    "META_PREFIX",
    "REFERENCE_USER_FIELDS",
    "STUDY_SCHEMA",
    "SEVERITY_TYPE",
    "VIEWER_STATUS_TYPE",
    "MAX_METADATA_PAIRS",
    "MAX_METADATA_KEY_LENGTH",
    "MAX_METADATA_VALUE_LENGTH",
    "MAX_PAGE_LIMIT",
    "Failure",
    "Rule",
    "Pattern",
    "Choice",
    "Text",
    "Flag",
    "WholeNumber",
    "Metadata",
    "RULES",
    "Field",
    "FIELDS",
    "LIST_FILTERS",
    "STUDY_COLUMNS",
    "check_arguments",
    "wire_body",
    "reference_failures",
    "study_table_failures",
    "is_study_id",
    "is_user_id",
    "is_customer_id",
    "is_api_key_id",
    "is_dicom_uid",
    "metadata_problems",
    "meta_column",
    "NOT_GIVEN",
    "NotGiven",
    "list_query_params",
    "StudyFilters",
    "StudyFilterArgs",
    "StudyFetchFilterArgs",
    "FILTER_NAMES",
    "MULTI_VALUE_FILTERS",
    "CREATE_FIELDS",
    "UPDATE_FIELDS",
    "IDENTIFY_FIELDS",
]

Severity = Literal["normal", "high", "stat"]
ViewerStatus = Literal["incomplete", "complete"]

#: Severities in their order of urgency (the ordered categorical ``normal < high < stat``).
SEVERITIES: Final = ("normal", "high", "stat")
#: Viewer statuses, as the API spells them.
VIEWER_STATUSES: Final = ("incomplete", "complete")

MAX_METADATA_PAIRS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 100
MAX_METADATA_VALUE_LENGTH: Final = 1000
MAX_PAGE_LIMIT: Final = 100

#: What a rule checks as a column: a pyarrow array (plain or chunked), a pandas Series, or
#: any sequence pyarrow can read.
Column = Union[pa.Array, pa.ChunkedArray, "pd.Series[Any]", Sequence[Any]]

_REDACTED: Final = "<redacted>"
_SHORT: Final = 80  # longest value a metadata failure reports as is


# --- failures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One value that breaks a rule: a row of ``ValidationError.failure_cases`` to be.

    ``row`` is the position in the column checked (None for one value); callers that know
    better labels (a DataFrame's index) put those in ``case``. ``detail`` is optional text the
    message adds after the reason. The value of a secret field (``errors.SECRET_FIELDS``) is
    never kept; a lone surrogate in a text value is kept escaped (``\\ud800``).

    >>> Failure("api_key", "sk-live-123", Reason.EMPTY).value
    '<redacted>'
    """

    field: str
    value: Any
    reason: Reason
    row: Any = None
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.field in SECRET_FIELDS:
            object.__setattr__(self, "value", _REDACTED)
        elif isinstance(self.value, str) and not _is_unicode(self.value):
            # a lone surrogate, escaped: pandas 3 stores a column of str in Arrow, which
            # cannot hold one, so failure_cases could not be built with it
            escaped = self.value.encode("utf-8", "backslashreplace").decode("utf-8")
            object.__setattr__(self, "value", escaped)

    def case(self, row: Any = None) -> dict[str, Any]:
        """This failure as a case of ``ValidationError.from_cases`` (``row`` replaces the
        position when given)."""
        return {
            "row": self.row if row is None else row,
            "field": self.field,
            "value": self.value,
            "reason": self.reason,
            "detail": self.detail,
        }


_Finding = tuple[Reason, Any, str | None]  # reason, value to report, detail
_Mask = tuple[Any, Reason, str | None]  # boolean array over the column, reason, detail


# --- rules ----------------------------------------------------------------------------------


class Rule:
    """One rule of the contract: ``reason`` is the Reason of a value of the wrong form;
    ``wire_text`` completes the sandbox's 400 message "<param> must be <wire_text>".

    ``check(value)`` checks one value (``None`` is a missing value: refused as
    ``Reason.REQUIRED`` unless ``nullable``); ``check_column(values)`` checks a whole column
    at once, vectorised with ``pyarrow.compute`` (nulls, NaN and pandas NA are missing
    values, allowed unless ``nullable=False``), giving every failure with its row position.
    A column pyarrow cannot read (an object Series of mixed types) is checked value by value,
    with the same results.
    """

    def __init__(self, name: str, reason: Reason, wire_text: str) -> None:
        self.name = name
        self.reason = reason
        self.wire_text = wire_text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- one value ---------------------------------------------------------------------

    def findings(self, value: object) -> list[_Finding]:
        """The ways a present (not None) value breaks this rule."""
        raise NotImplementedError

    def check(
        self, value: object, field: str | None = None, *, nullable: bool = False
    ) -> list[Failure]:
        """Every failure of one value, named ``field`` (default: the rule's name).

        >>> RULES["study_id"].check("stu_123", "study_id")[0].reason.name
        'NOT_STUDY_ID'
        """
        name = field or self.name
        if value is None:
            return [] if nullable else [Failure(name, None, Reason.REQUIRED)]
        return [Failure(name, v, r, detail=d) for r, v, d in self.findings(value)]

    def accepts(self, value: object) -> bool:
        """True when ``value`` is present and keeps the rule."""
        return value is not None and not self.findings(value)

    # -- a column ----------------------------------------------------------------------

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        """Boolean arrays marking the present values that fail, one per reason; None when
        this rule has no vectorised form for the array's type (checked value by value)."""
        raise NotImplementedError

    def check_column(
        self, values: Column, field: str | None = None, *, nullable: bool = True
    ) -> list[Failure]:
        """Every failure in a column, in row order; ``row`` is the position.

        >>> import pyarrow as pa
        >>> failures = RULES["user_id"].check_column(pa.array(["usr_" + "0" * 32, "bob", None]))
        >>> [(f.row, f.value, f.reason.name) for f in failures]
        [(1, 'bob', 'NOT_USER_ID')]
        """
        import pyarrow.compute as pc

        name = field or self.name
        array = _as_arrow(values)
        masks = None
        if array is not None:
            if pa.types.is_dictionary(array.type):
                array = array.cast(array.type.value_type)
            masks = self.column_masks(array)
        if array is None or masks is None:
            return self._check_each(_python_values(values), name, nullable)
        missing = pc.is_null(array, nan_is_null=True)
        present = pc.invert(missing)
        failures: list[Failure] = []
        if not nullable:
            failures += [
                Failure(name, None, Reason.REQUIRED, row=row)
                for row in _positions(missing)
            ]
        for mask, reason, detail in masks:
            rows = _positions(pc.and_(present, mask))
            if rows:
                taken = array.take(pa.array(rows, pa.int64())).to_pylist()
                failures += [
                    Failure(name, value, reason, row=row, detail=detail)
                    for row, value in zip(rows, taken, strict=True)
                ]
        failures.sort(key=lambda f: f.row)
        return failures

    def _check_each(self, values: list[Any], name: str, nullable: bool) -> list[Failure]:
        failures: list[Failure] = []
        for row, value in enumerate(values):
            if _is_missing(value):
                if not nullable:
                    failures.append(Failure(name, None, Reason.REQUIRED, row=row))
                continue
            failures += [
                Failure(name, v, r, row=row, detail=d) for r, v, d in self.findings(value)
            ]
        return failures

    # -- the list query's text form ----------------------------------------------------

    def to_query(self, value: Any) -> str:
        """A valid value as a query parameter's text."""
        return str(value)

    def from_query(self, text: str) -> object:
        """A query parameter's text as the value this rule checks (unreadable text is
        returned as is, for the rule to refuse)."""
        return text


class Pattern(Rule):
    """A string that fully matches a regular expression (Python ``re`` for one value, RE2
    for a column: the patterns used are in their common subset), of at most ``max_length``
    characters. The empty string is ``Reason.EMPTY``; anything else that does not match, a
    non-string included, is the rule's reason.

    >>> RULES["customer_id"].accepts("cus_" + "f" * 32), RULES["customer_id"].accepts("cus_x")
    (True, False)
    """

    def __init__(
        self,
        name: str,
        pattern: str,
        reason: Reason,
        wire_text: str,
        *,
        max_length: int | None = None,
    ) -> None:
        super().__init__(name, reason, wire_text)
        self.pattern = pattern
        self.max_length = max_length
        self._regex = re.compile(pattern)

    def findings(self, value: object) -> list[_Finding]:
        if not isinstance(value, str):
            return [(self.reason, value, None)]
        if value == "":
            return [(Reason.EMPTY, value, None)]
        too_long = self.max_length is not None and len(value) > self.max_length
        if too_long or self._regex.fullmatch(value) is None:
            return [(self.reason, value, None)]
        return []

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        import pyarrow.compute as pc

        if not _is_text_type(array.type):
            return [(_all_true(array), self.reason, None)]
        length = pc.utf8_length(array)
        empty = pc.equal(length, 0)
        good = pc.match_substring_regex(array, f"^(?:{self.pattern})$")
        if self.max_length is not None:
            good = pc.and_(good, pc.less_equal(length, self.max_length))
        return [(empty, Reason.EMPTY, None), (pc.invert(pc.or_(good, empty)), self.reason, None)]


class Choice(Rule):
    """One of a fixed set of strings (an enum of the contract).

    >>> RULES["study_viewer_status"].accepts("complete"), RULES["severity"].accepts("STAT")
    (True, False)
    """

    def __init__(self, name: str, choices: Sequence[str], reason: Reason) -> None:
        super().__init__(name, reason, "one of " + ", ".join(choices))
        self.choices = tuple(choices)

    def findings(self, value: object) -> list[_Finding]:
        if isinstance(value, str) and value in self.choices:
            return []
        return [(self.reason, value, None)]

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        import pyarrow.compute as pc

        if not _is_text_type(array.type):
            return [(_all_true(array), self.reason, None)]
        known = pc.is_in(array, value_set=pa.array(self.choices, array.type))
        return [(pc.invert(known), self.reason, None)]


class Text(Rule):
    """A string: not empty, not blank (only whitespace, as ``str.isspace`` says) unless
    ``blank_ok``, valid Unicode, at most ``max_length`` characters when given. The reasons
    for a non-string and for the empty string can be chosen (a cursor says ``NOT_CURSOR``).

    >>> [f.reason.name for f in RULES["study_description"].check("   ")]
    ['BLANK']
    """

    def __init__(
        self,
        name: str,
        wire_text: str,
        *,
        blank_ok: bool = False,
        max_length: int | None = None,
        not_text: Reason = Reason.NOT_TEXT,
        empty: Reason = Reason.EMPTY,
    ) -> None:
        super().__init__(name, not_text, wire_text)
        self.blank_ok = blank_ok
        self.max_length = max_length
        self.empty = empty

    def findings(self, value: object) -> list[_Finding]:
        if not isinstance(value, str):
            return [(self.reason, value, None)]
        if value == "":
            return [(self.empty, value, None)]
        if not _is_unicode(value):
            return [(Reason.NOT_UNICODE, value, None)]
        if not self.blank_ok and value.isspace():
            return [(Reason.BLANK, value, None)]
        if self.max_length is not None and len(value) > self.max_length:
            return [(Reason.TOO_LONG, value, f"at most {self.max_length} characters")]
        return []

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        import pyarrow.compute as pc

        if not _is_text_type(array.type):
            return [(_all_true(array), self.reason, None)]
        length = pc.utf8_length(array)
        masks: list[_Mask] = [(pc.equal(length, 0), self.empty, None)]
        if not self.blank_ok:
            # utf8_is_space is false for "" and agrees with str.isspace on every code point
            masks.append((pc.utf8_is_space(array), Reason.BLANK, None))
        if self.max_length is not None:
            detail = f"at most {self.max_length} characters"
            masks.append((pc.greater(length, self.max_length), Reason.TOO_LONG, detail))
        return masks


class Flag(Rule):
    """A boolean (``bool`` or ``numpy.bool_``); on the wire ``true`` / ``false``.

    >>> RULES["boolean"].to_query(False), RULES["boolean"].from_query("true")
    ('false', True)
    """

    def __init__(self, name: str) -> None:
        super().__init__(name, Reason.NOT_BOOLEAN, "true or false")

    def findings(self, value: object) -> list[_Finding]:
        return [] if isinstance(value, (bool, np.bool_)) else [(self.reason, value, None)]

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        if pa.types.is_boolean(array.type):
            return []
        return [(_all_true(array), self.reason, None)]

    def to_query(self, value: Any) -> str:
        return "true" if value else "false"

    def from_query(self, text: str) -> object:
        return {"true": True, "false": False}.get(text, text)


# the SDK types limit as a float, so "25.0" is a whole number too; "1e1", "1_0", " 10" are not
_WHOLE_NUMBER_TEXT: Final = re.compile(r"[0-9]+(\.0*)?")


class WholeNumber(Rule):
    """A whole number from ``low`` to ``high``: an int (numpy's too, never a bool), or a
    float with no fraction (the ``avara`` SDK types ``limit`` as a float). On the wire, digits
    with an optional ``.0``.

    >>> [f.reason.name for f in RULES["page_limit"].check(2.5) + RULES["page_limit"].check(500)]
    ['NOT_WHOLE_NUMBER', 'OUT_OF_RANGE']
    """

    def __init__(self, name: str, low: int, high: int) -> None:
        super().__init__(name, Reason.NOT_WHOLE_NUMBER, f"a whole number from {low} to {high}")
        self.low = low
        self.high = high
        self._range = f"from {low} to {high}"

    def findings(self, value: object) -> list[_Finding]:
        whole = not isinstance(value, (bool, np.bool_)) and (
            isinstance(value, (int, np.integer))
            or (
                isinstance(value, (float, np.floating))
                and math.isfinite(value)
                and float(value).is_integer()
            )
        )
        number = int(value) if whole else None  # type: ignore[call-overload]
        if number is None:
            return [(self.reason, value, self._range)]
        if not self.low <= number <= self.high:
            return [(Reason.OUT_OF_RANGE, value, self.wire_text)]
        return []

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        import pyarrow.compute as pc

        kind = array.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind):
            outside = pc.or_(pc.less(array, self.low), pc.greater(array, self.high))
            if pa.types.is_integer(kind):
                return [(outside, Reason.OUT_OF_RANGE, self.wire_text)]
            whole = pc.and_(pc.is_finite(array), pc.equal(pc.floor(array), array))
            return [
                (pc.invert(whole), self.reason, self._range),
                (pc.and_(whole, outside), Reason.OUT_OF_RANGE, self.wire_text),
            ]
        return [(_all_true(array), self.reason, self._range)]

    def to_query(self, value: Any) -> str:
        return str(int(value))

    def from_query(self, text: str) -> object:
        if _WHOLE_NUMBER_TEXT.fullmatch(text):
            return int(text.partition(".")[0])
        return text


class Metadata(Rule):
    """The metadata map: a mapping of at most ``max_pairs`` pairs, keys strings of 1 to
    ``max_key`` characters, values strings of at most ``max_value`` characters.

    One value gives one failure per problem (the key or value at fault as the value, the key
    in the detail); a column is a map column, or the study table's ``meta.*`` columns
    (:meth:`check_meta_columns`).

    >>> [f.reason.name for f in RULES["metadata"].check({"": "x", "site": 3})]
    ['BAD_METADATA_KEY', 'METADATA_VALUE_NOT_TEXT']
    """

    def __init__(self, name: str, max_pairs: int, max_key: int, max_value: int) -> None:
        super().__init__(name, Reason.NOT_METADATA, "an object of string keys and string values")
        self.max_pairs = max_pairs
        self.max_key = max_key
        self.max_value = max_value

    def problems(self, value: object) -> Iterator[tuple[Reason, Any, str | None, str]]:
        """Each problem as (reason, value to report, detail, a sentence naming it)."""
        if not isinstance(value, Mapping):
            kind = type(value).__name__
            yield (
                self.reason,
                _short(value),
                f"not {kind}",
                f"must be an object of string keys and string values, not {kind}",
            )
            return
        if len(value) > self.max_pairs:
            yield (
                Reason.TOO_MANY_PAIRS,
                len(value),
                f"{len(value)} pairs",
                f"has {len(value)} pairs; at most {self.max_pairs} are allowed",
            )
        for key, item in value.items():
            if not isinstance(key, str) or not 1 <= len(key) <= self.max_key:
                yield (
                    Reason.BAD_METADATA_KEY,
                    _short(key),
                    None,
                    f"key {key!r} must be 1-{self.max_key} characters",
                )
            elif not _is_unicode(key):
                yield (Reason.NOT_UNICODE, key, "a key", f"key {key!r} is not valid Unicode")
            if not isinstance(item, str):
                yield (
                    Reason.METADATA_VALUE_NOT_TEXT,
                    _short(item),
                    f"key {key!r}",
                    f"value of {key!r} must be a string, not {type(item).__name__}",
                )
            elif len(item) > self.max_value:
                yield (
                    Reason.METADATA_VALUE_TOO_LONG,
                    _short(item),
                    f"key {key!r} has {len(item)}",
                    f"value of {key!r} has {len(item)} characters; at most "
                    f"{self.max_value} are allowed",
                )
            elif not _is_unicode(item):
                yield (
                    Reason.NOT_UNICODE,
                    item,
                    f"value of key {key!r}",
                    f"value of {key!r} is not valid Unicode",
                )

    def findings(self, value: object) -> list[_Finding]:
        return [(reason, shown, detail) for reason, shown, detail, _ in self.problems(value)]

    def column_masks(self, array: pa.Array | pa.ChunkedArray) -> list[_Mask] | None:
        return None  # failures are per pair, not per row: see check_column

    def check_column(
        self, values: Column, field: str | None = None, *, nullable: bool = True
    ) -> list[Failure]:
        """Every failure in a map column (``map<string, string>``), vectorised; any other
        column is checked value by value."""
        import pyarrow.compute as pc

        name = field or self.name
        array = _as_arrow(values)
        if array is None or not pa.types.is_map(array.type):
            return self._check_each(_python_values(values), name, nullable)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        failures: list[Failure] = []
        if not nullable:
            failures += [
                Failure(name, None, Reason.REQUIRED, row=row)
                for row in _positions(pc.is_null(array))
            ]
        pairs = array.cast(pa.list_(pa.struct([array.type.key_field, array.type.item_field])))
        counts = pc.list_value_length(pairs)
        for row in _positions(pc.greater(counts, self.max_pairs)):
            count = counts[row].as_py()
            failures.append(
                Failure(name, count, Reason.TOO_MANY_PAIRS, row=row, detail=f"{count} pairs")
            )
        flat = pc.list_flatten(pairs)
        parents = pc.list_parent_indices(pairs).to_pylist()
        keys, items = flat.flatten()
        if _is_text_type(keys.type):
            length = pc.utf8_length(keys)
            bad_keys = pc.or_(pc.less(length, 1), pc.greater(length, self.max_key))
        else:
            bad_keys = _all_true(keys)
        for at in _positions(bad_keys):
            key = keys[at].as_py()
            failures.append(
                Failure(name, _short(key), Reason.BAD_METADATA_KEY, row=parents[at])
            )
        if _is_text_type(items.type):
            not_text = pc.is_null(items)
            too_long = pc.greater(pc.utf8_length(items), self.max_value)
        else:
            not_text, too_long = _all_true(items), None
        for mask, reason in ((not_text, Reason.METADATA_VALUE_NOT_TEXT),
                             (too_long, Reason.METADATA_VALUE_TOO_LONG)):
            if mask is None:
                continue
            for at in _positions(pc.fill_null(mask, False)):
                key, item = keys[at].as_py(), items[at].as_py()
                detail = f"key {key!r}" + (
                    f" has {len(item)}" if reason is Reason.METADATA_VALUE_TOO_LONG else ""
                )
                failures.append(
                    Failure(name, _short(item), reason, row=parents[at], detail=detail)
                )
        failures.sort(key=lambda f: f.row)
        return failures

    def check_meta_columns(self, columns: Mapping[str, Column]) -> list[Failure]:
        """Every failure of the study table's ``meta.*`` columns, vectorised: a key (the
        column name after ``meta.``) that is not 1-``max_key`` characters, in every row where
        that column holds a value; values longer than ``max_value``; rows with more than
        ``max_pairs`` values (field ``metadata``). Rows are positions; nulls are absent keys.

        >>> import pyarrow as pa
        >>> failures = RULES["metadata"].check_meta_columns({"meta.": pa.array([None, "x"])})
        >>> [(f.row, f.field, f.reason.name) for f in failures]
        [(1, 'meta.', 'BAD_METADATA_KEY')]
        """
        import pyarrow.compute as pc

        failures: list[Failure] = []
        counts: np.ndarray | None = None
        for name, values in columns.items():
            key = name[len(META_PREFIX) :] if name.startswith(META_PREFIX) else name
            array = _as_arrow(values)
            if array is None:
                # not readable as one Arrow type (mixed objects): not convertible to text
                cells = _python_values(values)
                present_rows = [r for r, v in enumerate(cells) if not _is_missing(v)]
                failures += [
                    Failure(name, _short(cells[r]), Reason.METADATA_VALUE_NOT_TEXT, row=r,
                            detail=f"key {key!r}")
                    for r in present_rows
                    if not isinstance(cells[r], str)
                ]
                present = np.zeros(len(cells), dtype=bool)
                present[present_rows] = True
                texts = None
            else:
                missing = pc.is_null(array, nan_is_null=True)
                present = np.asarray(pc.invert(missing).to_numpy(zero_copy_only=False), bool)
                texts = array
                if pa.types.is_dictionary(texts.type):
                    texts = texts.cast(texts.type.value_type)
                if not _is_text_type(texts.type):
                    try:
                        texts = texts.cast(pa.string())
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                        failures += [
                            Failure(name, _short(array[r].as_py()),
                                    Reason.METADATA_VALUE_NOT_TEXT, row=r, detail=f"key {key!r}")
                            for r in np.flatnonzero(present).tolist()
                        ]
                        texts = None
            counts = present.astype(np.int64) if counts is None else counts + present
            if not 1 <= len(key) <= self.max_key:
                failures += [
                    Failure(name, _short(key), Reason.BAD_METADATA_KEY, row=r)
                    for r in np.flatnonzero(present).tolist()
                ]
            if texts is not None:
                lengths = pc.utf8_length(texts)
                too_long = pc.fill_null(pc.greater(lengths, self.max_value), False)
                for r in _positions(too_long):
                    text = texts[r].as_py()
                    failures.append(
                        Failure(name, _short(text), Reason.METADATA_VALUE_TOO_LONG, row=r,
                                detail=f"key {key!r} has {len(text)}")
                    )
        if counts is not None:
            for r in np.flatnonzero(counts > self.max_pairs).tolist():
                count = int(counts[r])
                failures.append(
                    Failure("metadata", count, Reason.TOO_MANY_PAIRS, row=r,
                            detail=f"{count} pairs")
                )
        failures.sort(key=lambda f: f.row)
        return failures


def _as_arrow(values: Column) -> pa.Array | pa.ChunkedArray | None:
    """The column as Arrow, or None when pyarrow cannot read it as one type."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None


def _python_values(values: Column) -> list[Any]:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return list(values.to_pylist())
    tolist = getattr(values, "tolist", None)
    return list(tolist()) if callable(tolist) else list(values)


def _is_missing(value: object) -> bool:
    """None, NaN, or pandas' NA / NaT: a missing cell of a column."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    pandas = sys.modules.get("pandas")
    return pandas is not None and (value is pandas.NA or value is pandas.NaT)


def _is_text_type(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _all_true(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pa.array(np.ones(len(array), dtype=bool))


def _positions(mask: pa.Array | pa.ChunkedArray) -> list[int]:
    import pyarrow.compute as pc

    return list(pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist())


def _is_unicode(text: str) -> bool:
    """False for text holding a lone surrogate, which no JSON body or URL can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(value: object) -> object:
    """The value, or the start of it when its text is long (a failure case stays readable)."""
    if isinstance(value, str):
        return value if len(value) <= _SHORT else value[: _SHORT - 3] + "..."
    text = repr(value)
    return value if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


_HEX32: Final = "[0-9a-f]{32}"

#: The rule table: every rule of the wire contract, by name.
RULES: Final[Mapping[str, Rule]] = {
    rule.name: rule
    for rule in (
        Pattern("study_id", "stu_" + _HEX32, Reason.NOT_STUDY_ID,
                "stu_ followed by 32 lowercase hex digits"),
        Pattern("user_id", "usr_" + _HEX32, Reason.NOT_USER_ID,
                "usr_ followed by 32 lowercase hex digits"),
        Pattern("customer_id", "cus_" + _HEX32, Reason.NOT_CUSTOMER_ID,
                "cus_ followed by 32 lowercase hex digits"),
        Pattern("api_key_id",
                "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                Reason.NOT_API_KEY_ID, "a lowercase UUID version 4"),
        # components: "0" or a digit run without a leading zero, separated by single dots
        Pattern("study_instance_uid", r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*",
                Reason.NOT_DICOM_UID,
                "a DICOM UID: 1-64 digits and dots, no empty component, no leading zero",
                max_length=64),
        Choice("severity", SEVERITIES, Reason.NOT_SEVERITY),
        Choice("study_viewer_status", VIEWER_STATUSES, Reason.NOT_VIEWER_STATUS),
        # the sandbox enforces no length limit on descriptions (only 1 MiB per body), and the
        # hosted API publishes none: so no max_length here
        Text("study_description", "a non-empty string"),
        # the list filter is a contains match: "   " is a search, only "" is refused
        Text("description_filter", "a non-empty string", blank_ok=True),
        Metadata("metadata", MAX_METADATA_PAIRS, MAX_METADATA_KEY_LENGTH,
                 MAX_METADATA_VALUE_LENGTH),
        Flag("boolean"),
        WholeNumber("page_limit", 1, MAX_PAGE_LIMIT),
        Text("cursor", "the cursor of a previous page", blank_ok=True,
             not_text=Reason.NOT_CURSOR, empty=Reason.NOT_CURSOR),
    )
}


# --- which field obeys which rule -----------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A field of the contract: ``name`` as viewerkit spells it (client argument, table
    column, ``failure_cases`` field), ``wire`` as the API does, its rule, and whether null
    (``None``) is a value of it (e.g. ``assigned_to=None`` unassigns; ``null_detail`` says so
    in the message of a value of the wrong form).

    >>> FIELDS["assigned_to"].check("bob")[0].case()["detail"]
    'or None'
    """

    name: str
    wire: str
    rule: Rule
    nullable: bool = False
    null_detail: str = "or None"

    def check(self, value: object) -> list[Failure]:
        """Every failure of one value of this field."""
        failures = self.rule.check(value, self.name, nullable=self.nullable)
        if self.nullable:
            failures = [
                dataclasses.replace(f, detail=self.null_detail)
                if f.reason is self.rule.reason and f.detail is None
                else f
                for f in failures
            ]
        return failures

    def check_column(self, values: Column) -> list[Failure]:
        """Every failure in a column of this field (rows are positions)."""
        return self.rule.check_column(values, self.name, nullable=self.nullable)

    def to_query(self, value: Any) -> str:
        """A valid value as query text; null is the literal ``null``."""
        return "null" if value is None else self.rule.to_query(value)

    def from_query(self, text: str) -> object:
        """Query text as the value to check."""
        if self.nullable and text == "null":
            return None
        return self.rule.from_query(text)


def _fields(*fields: Field) -> Mapping[str, Field]:
    return {f.name: f for f in fields}


#: The request fields of create, update, retrieve and cancel / uncancel / reroute-url.
FIELDS: Final[Mapping[str, Field]] = _fields(
    Field("study_id", "studyId", RULES["study_id"]),
    Field("study_instance_uid", "studyInstanceUid", RULES["study_instance_uid"]),
    Field("study_description", "studyDescription", RULES["study_description"]),
    Field("severity", "severity", RULES["severity"]),
    Field("study_viewer_status", "studyViewerStatus", RULES["study_viewer_status"]),
    Field("assigned_to", "assignedTo", RULES["user_id"], nullable=True),
    Field("express_customer_id", "expressCustomerId", RULES["customer_id"], nullable=True),
    Field("metadata", "metadata", RULES["metadata"], nullable=True),
)

#: The list query's filters, in the order the sandbox checks them; ``None`` for the two
#: nullable ones selects "none" (the wire's literal ``null``).
LIST_FILTERS: Final[Mapping[str, Field]] = _fields(
    dataclasses.replace(FIELDS["assigned_to"], null_detail="or None for none"),
    dataclasses.replace(FIELDS["express_customer_id"], null_detail="or None for none"),
    Field("is_cancelled", "isCancelled", RULES["boolean"]),
    FIELDS["severity"],
    FIELDS["study_viewer_status"],
    Field("study_description", "studyDescription", RULES["description_filter"]),
    Field("limit", "limit", RULES["page_limit"]),
    Field("cursor", "cursor", RULES["cursor"]),
)

#: The study table's columns ``from_pandas`` checks: the identifiers a request is addressed
#: by (never null: ``STUDY_SCHEMA`` says so) and the writable fields (null where the table
#: allows it), plus the ``meta.*`` columns (``Metadata.check_meta_columns``). The read-only
#: provenance columns (``created_by_*``, names, emails) come from the server and are never
#: sent, so they are not refused here.
STUDY_COLUMNS: Final[Mapping[str, Field]] = _fields(
    Field("study_id", "studyId", RULES["study_id"]),
    Field("study_instance_uid", "studyInstanceUid", RULES["study_instance_uid"]),
    Field("study_description", "studyDescription", RULES["study_description"], nullable=True),
    Field("severity", "severity", RULES["severity"], nullable=True),
    Field("study_viewer_status", "studyViewerStatus", RULES["study_viewer_status"],
          nullable=True),
    Field("assigned_to_user_id", "assignedTo", RULES["user_id"], nullable=True),
    Field("express_customer_id", "expressCustomerId", RULES["customer_id"], nullable=True),
)


def is_study_id(value: object) -> bool:
    """``stu_`` followed by 32 lowercase hex digits."""
    return RULES["study_id"].accepts(value)


def is_user_id(value: object) -> bool:
    """``usr_`` followed by 32 lowercase hex digits."""
    return RULES["user_id"].accepts(value)


def is_customer_id(value: object) -> bool:
    """``cus_`` followed by 32 lowercase hex digits."""
    return RULES["customer_id"].accepts(value)


def is_api_key_id(value: object) -> bool:
    """A lowercase UUID version 4."""
    return RULES["api_key_id"].accepts(value)


def is_dicom_uid(value: object) -> bool:
    """A DICOM UID: 1-64 characters of digits and dots, no empty component, no leading zero."""
    return RULES["study_instance_uid"].accepts(value)


def metadata_problems(metadata: object) -> list[str]:
    """Every way ``metadata`` breaks the contract's limits, as readable reasons (empty if fine).

    >>> metadata_problems({"site": "North"})
    []
    >>> metadata_problems({"": "x"})
    ["key '' must be 1-100 characters"]
    """
    rule = RULES["metadata"]
    assert isinstance(rule, Metadata)
    return [sentence for *_, sentence in rule.problems(metadata)]


def check_arguments(call: str, /, **arguments: object) -> None:
    """Check request arguments (named as in ``FIELDS``; ``NOT_GIVEN`` ones are skipped) and
    raise one ``ValidationError`` naming every bad one, before anything is sent.

    >>> check_arguments("update_study", study_id="stu_" + "a" * 32, severity="urgent")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: update_study: 1 problem
      field severity: must be one of normal, high, stat (got 'urgent')
    """
    failures: list[Failure] = []
    for name, value in arguments.items():
        if not isinstance(value, NotGiven):
            failures += FIELDS[name].check(value)
    if failures:
        raise ValidationError.from_cases(call, [f.case() for f in failures])


def wire_body(**arguments: object) -> dict[str, Any]:
    """The JSON body of checked arguments, camelCase; ``NOT_GIVEN`` ones are left out.

    >>> wire_body(severity="stat", assigned_to=None, metadata=NOT_GIVEN)
    {'severity': 'stat', 'assignedTo': None}
    """
    body: dict[str, Any] = {}
    for name, value in arguments.items():
        if isinstance(value, NotGiven):
            continue
        body[FIELDS[name].wire] = dict(value) if isinstance(value, Mapping) else value
    return body


def reference_failures(study_id: object, study_instance_uid: object) -> list[Failure]:
    """How cancel, uncancel and reroute-url name their study: by ID or UID (``None`` = not
    given), at least one. Every failure, the study ID's first.

    >>> [f.reason.name for f in reference_failures(None, None)]
    ['REQUIRED']
    """
    if study_id is None and study_instance_uid is None:
        return [
            Failure("study_id", None, Reason.REQUIRED, detail="give study_id or study_instance_uid")
        ]
    failures: list[Failure] = []
    if study_id is not None:
        failures += FIELDS["study_id"].check(study_id)
    if study_instance_uid is not None:
        failures += FIELDS["study_instance_uid"].check(study_instance_uid)
    return failures


def study_table_failures(table: pa.Table | pd.DataFrame) -> list[Failure]:
    """Every failure of a study table (Arrow table or DataFrame) against ``STUDY_COLUMNS``
    and the metadata limits, vectorised per column; ``row`` is the position. A missing
    ``study_id`` or ``study_instance_uid`` column is one ``MISSING_COLUMN`` failure.

    >>> import pyarrow as pa
    >>> table = pa.table({"study_id": ["stu_" + "1" * 32, "stu_2"], "study_instance_uid": ["1", "2"],
    ...                   "severity": ["stat", "urgent"]})
    >>> [(f.row, f.field, f.reason.name) for f in study_table_failures(table)]
    [(1, 'study_id', 'NOT_STUDY_ID'), (1, 'severity', 'NOT_SEVERITY')]
    """
    if isinstance(table, pa.Table):
        names: list[Any] = list(table.column_names)

        def column(name: Any) -> Column:
            return table.column(name)
    else:
        names = list(table.columns)

        def column(name: Any) -> Column:
            return table[name]

    order = {name: at for at, name in enumerate(STUDY_COLUMNS)}
    failures: list[Failure] = []
    for field in STUDY_COLUMNS.values():
        if field.name in names:
            failures += field.check_column(column(field.name))
        elif not field.nullable:
            failures.append(Failure(field.name, None, Reason.MISSING_COLUMN))
    meta = {name: column(name) for name in names
            if isinstance(name, str) and name.startswith(META_PREFIX)}
    if meta:
        rule = RULES["metadata"]
        assert isinstance(rule, Metadata)
        failures += rule.check_meta_columns(meta)
    failures.sort(
        key=lambda f: (-1 if f.row is None else f.row, order.get(f.field, len(order)))
    )
    return failures


#: The body fields each write accepts, as the wire spells them (create's first three are
#: required); the client, the study table's row -> body direction and the sandbox share them.
CREATE_FIELDS: Final = (
    "severity",
    "studyDescription",
    "studyInstanceUid",
    "assignedTo",
    "expressCustomerId",
    "metadata",
)
UPDATE_FIELDS: Final = ("assignedTo", "metadata", "severity", "studyDescription", "studyViewerStatus")
#: How cancel, uncancel and reroute-url name their study: one of the two.
IDENTIFY_FIELDS: Final = ("studyId", "studyInstanceUid")


#: Prefix of the metadata columns: key ``site`` becomes column ``meta.site``.
META_PREFIX: Final = "meta."


def meta_column(key: str) -> str:
    """The column name of a metadata key (its exact spelling after ``meta.``)."""
    return META_PREFIX + key


#: The fields of a user reference, as column suffixes, in API order.
REFERENCE_USER_FIELDS: Final = (
    ("user_id", "userId"),
    ("email", "email"),
    ("first_name", "firstName"),
    ("last_name", "lastName"),
    ("middle_name", "middleName"),
    ("suffix1", "suffix1"),
    ("suffix2", "suffix2"),
)

#: Arrow type of ``severity``: dictionary-encoded with the fixed, ordered dictionary SEVERITIES.
SEVERITY_TYPE: Final = pa.dictionary(pa.int8(), pa.string(), ordered=True)
#: Arrow type of ``study_viewer_status``: dictionary-encoded over VIEWER_STATUSES.
VIEWER_STATUS_TYPE: Final = pa.dictionary(pa.int8(), pa.string())

_TIMESTAMP = pa.timestamp("ms", tz="UTC")


def _user_fields(prefix: str) -> list[pa.Field]:
    return [pa.field(f"{prefix}_{suffix}", pa.string()) for suffix, _ in REFERENCE_USER_FIELDS]


#: The fixed columns of the study table, in order. ``meta.*`` string columns follow them.
STUDY_SCHEMA: Final = pa.schema(
    [
        pa.field("study_id", pa.string(), nullable=False),
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("study_description", pa.string()),
        pa.field("severity", SEVERITY_TYPE),
        pa.field("study_viewer_status", VIEWER_STATUS_TYPE),
        pa.field("is_cancelled", pa.bool_()),
        pa.field("created_at", _TIMESTAMP),
        pa.field("updated_at", _TIMESTAMP),
        pa.field("cancelled_at", _TIMESTAMP),
        *_user_fields("assigned_to"),
        *_user_fields("created_by_user"),
        pa.field("created_by_api_key_id", pa.string()),
        pa.field("created_by_api_key_description", pa.string()),
        pa.field("created_by_api_key_is_viewer_enabled", pa.bool_()),
        pa.field("express_customer_id", pa.string()),
        pa.field("express_customer_name", pa.string()),
    ]
)


class NotGiven:
    """Sentinel for "argument not given", distinct from ``None`` (which means the API's null).

    >>> NOT_GIVEN
    NOT_GIVEN
    """

    _instance: NotGiven | None = None

    def __new__(cls) -> NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = NotGiven()


def list_query_params(
    filters: StudyFilters | None = None,
    /,
    *,
    limit: int | float | np.integer | NotGiven = NOT_GIVEN,
    cursor: str | NotGiven = NOT_GIVEN,
    **filter_args: Any,
) -> dict[str, str]:
    """Check one list call's filters (a :class:`StudyFilters`, or its keyword arguments),
    ``limit`` and ``cursor`` against ``LIST_FILTERS``, and encode them as the API's query
    parameters. Every problem is reported at once, as a ``ValidationError`` naming the
    field, before any request.

    ``None`` for ``assigned_to`` / ``express_customer_id`` selects studies with no assignee /
    no customer (the API's literal ``null``); ``NOT_GIVEN`` leaves a filter off. The API takes
    one value per filter.

    >>> list_query_params(assigned_to=None, is_cancelled=False, severity="stat", limit=100)
    {'assignedTo': 'null', 'isCancelled': 'false', 'severity': 'stat', 'limit': '100'}
    """
    chosen, cases = StudyFilters.checked(filters, filter_args)
    params: dict[str, str] = {}
    if chosen is not None:
        cases += chosen.several_values()
        params.update(
            (LIST_FILTERS[name].wire, LIST_FILTERS[name].to_query(value))
            for name, value in chosen.given().items()
        )
    for name, value in (("limit", limit), ("cursor", cursor)):
        if isinstance(value, NotGiven):
            continue
        found = LIST_FILTERS[name].check(value)
        cases += [f.case() for f in found]
        if not found:
            params[LIST_FILTERS[name].wire] = LIST_FILTERS[name].to_query(value)
    if cases:
        raise ValidationError.from_cases("bad study list filters", cases)
    return params


# --- the study list's filters -----------------------------------------------------------------

#: The six filters of the study list, in the order of ``LIST_FILTERS``.
FILTER_NAMES: Final = (
    "assigned_to",
    "express_customer_id",
    "is_cancelled",
    "severity",
    "study_description",
    "study_viewer_status",
)
#: The filters a fetch may give several values of (the fetcher pages one partition per value).
MULTI_VALUE_FILTERS: Final = ("severity", "study_viewer_status", "is_cancelled")
#: Every value of the multi-value filters: the partition dimensions.
FILTER_VALUES: Final[Mapping[str, tuple[Any, ...]]] = {
    "severity": SEVERITIES,
    "study_viewer_status": VIEWER_STATUSES,
    "is_cancelled": (False, True),
}

# The partition dimensions' values, ordered so that the usually-largest partition (normal,
# complete, not cancelled) comes first: the fetcher starts it first.
_PARTITION_ORDER: Final[Mapping[str, tuple[Any, ...]]] = {
    **FILTER_VALUES,
    "study_viewer_status": tuple(reversed(VIEWER_STATUSES)),
}


class StudyFilterArgs(TypedDict, total=False):
    """The study list's filters as keyword arguments, one value each, as the API takes
    them (``Client.list_studies`` ...). ``None`` for ``assigned_to`` /
    ``express_customer_id`` selects studies with none. Fields: :data:`FILTER_NAMES`."""

    assigned_to: str | None
    express_customer_id: str | None
    is_cancelled: bool
    severity: Severity
    study_description: str
    study_viewer_status: ViewerStatus


class StudyFetchFilterArgs(TypedDict, total=False):
    """The filters as ``fetch_studies`` takes them: as :class:`StudyFilterArgs`, and
    several values of severity, viewer status or cancelled (e.g. ``severity=["stat",
    "high"]``), which the fetcher pages as separate partitions."""

    assigned_to: str | None
    express_customer_id: str | None
    is_cancelled: bool | Sequence[bool]
    severity: Severity | Sequence[Severity]
    study_description: str
    study_viewer_status: ViewerStatus | Sequence[ViewerStatus]


@dataclass(frozen=True)
class StudyFilters:
    """Filters of the study list, checked once against ``LIST_FILTERS`` when made (every bad
    value at once, as a ``ValidationError`` naming the field, before any request).

    A filter left ``NOT_GIVEN`` is off; ``None`` for ``assigned_to`` /
    ``express_customer_id`` selects studies with none. Severity, viewer status and
    cancelled may hold several values (a tuple, in the contract's order): the fetcher pages
    one partition per value, while a single list call (:meth:`query_params`) takes one value
    per filter, as the API does.

    >>> StudyFilters(severity=["stat", "high"], assigned_to=None)
    StudyFilters(assigned_to=None, severity=('high', 'stat'))
    >>> StudyFilters(severity="stat").query_params()
    {'severity': 'stat'}
    >>> StudyFilters(severity="urgent")
    Traceback (most recent call last):
    ...
    viewerkit.errors.ValidationError: bad study list filters: 1 problem
      field severity: must be one of normal, high, stat (got 'urgent')
    """

    # several values may be given as any sequence; once made, they are a tuple
    assigned_to: str | None | NotGiven = NOT_GIVEN
    express_customer_id: str | None | NotGiven = NOT_GIVEN
    is_cancelled: bool | Sequence[bool] | NotGiven = NOT_GIVEN
    severity: Severity | Sequence[Severity] | NotGiven = NOT_GIVEN
    study_description: str | NotGiven = NOT_GIVEN
    study_viewer_status: ViewerStatus | Sequence[ViewerStatus] | NotGiven = NOT_GIVEN

    def __post_init__(self) -> None:
        cases = self._normalise()
        if cases:
            raise ValidationError.from_cases("bad study list filters", cases)

    def _normalise(self) -> list[dict[str, Any]]:
        """Check every filter; give several values one order (the contract's) and one value
        as itself; np.bool_ as bool. The failures as ``failure_cases`` dicts."""
        failures: list[Failure] = []
        for name in FILTER_NAMES:
            value = getattr(self, name)
            if isinstance(value, NotGiven):
                continue
            if name in MULTI_VALUE_FILTERS and _is_collection(value):
                values = list(value)
                found = [f for v in values for f in LIST_FILTERS[name].check(v)]
                if not values:
                    found = [Failure(name, value, Reason.EMPTY, detail="give one value or more")]
                if not found:
                    ordered = tuple(v for v in FILTER_VALUES[name] if v in values)
                    object.__setattr__(self, name, ordered[0] if len(ordered) == 1 else ordered)
                failures += found
            else:
                found = LIST_FILTERS[name].check(value)
                if name == "is_cancelled" and not found:
                    object.__setattr__(self, name, bool(value))  # np.bool_ -> bool
                failures += found
        return [f.case() for f in failures]

    def __repr__(self) -> str:
        given = ", ".join(f"{name}={value!r}" for name, value in self.given().items())
        return f"StudyFilters({given})"

    @classmethod
    def of(
        cls, filters: StudyFilters | None = None, arguments: Mapping[str, Any] | None = None
    ) -> StudyFilters:
        """A ``StudyFilters`` from either a ``StudyFilters`` or filter keyword arguments (as
        the public functions take them), not both; an unknown filter name is a
        ``ValidationError``, as is any bad value (every problem at once).

        >>> StudyFilters.of(None, {"is_cancelled": False})
        StudyFilters(is_cancelled=False)
        """
        chosen, cases = cls.checked(filters, arguments)
        if cases or chosen is None:
            raise ValidationError.from_cases("bad study list filters", cases)
        return chosen

    @classmethod
    def checked(
        cls, filters: StudyFilters | None, arguments: Mapping[str, Any] | None
    ) -> tuple[StudyFilters | None, list[dict[str, Any]]]:
        """As :meth:`of`, but the problems come back as ``failure_cases`` dicts (with None
        for the filters when there are any), to be reported with others."""
        arguments = dict(arguments or {})
        cases: list[dict[str, Any]] = [
            {"field": name, "value": arguments.pop(name), "reason": Reason.NOT_A_CHOICE,
             "detail": "filters: " + ", ".join(FILTER_NAMES)}
            for name in sorted(set(arguments) - set(FILTER_NAMES))
        ]
        if filters is not None and not isinstance(filters, StudyFilters):
            cases.append({"field": "filters", "value": filters, "reason": Reason.WRONG_TYPE,
                          "detail": "must be a StudyFilters"})
        elif filters is not None and arguments:
            cases.append({"field": "filters", "value": filters, "reason": Reason.CONFLICT,
                          "detail": "give a StudyFilters or filter keywords, not both"})
        if cases:
            return None, cases
        if filters is not None:
            return filters, []
        chosen = cls.__new__(cls)
        for name in FILTER_NAMES:
            object.__setattr__(chosen, name, arguments.get(name, NOT_GIVEN))
        found = chosen._normalise()
        return (None, found) if found else (chosen, [])

    @classmethod
    def from_text(cls, **values: str | bool | Sequence[str] | None) -> StudyFilters:
        """Filters as a command line gives them: ``None`` (or an empty sequence) leaves a
        filter off; the literal ``null`` selects "none" for ``assigned_to`` /
        ``express_customer_id``; ``is_cancelled`` takes a bool or ``true`` / ``false``.

        >>> StudyFilters.from_text(assigned_to="null", severity=None, is_cancelled="false")
        StudyFilters(assigned_to=None, is_cancelled=False)
        """
        given: dict[str, Any] = {}
        for name, value in values.items():
            if value is None or (not isinstance(value, (str, bool)) and len(value) == 0):
                continue
            given[name] = (
                LIST_FILTERS[name].from_query(value)
                if isinstance(value, str) and name in LIST_FILTERS
                else value
            )
        return cls.of(None, given)

    def given(self) -> dict[str, Any]:
        """The filters that are on, by name (keyword arguments of ``Client.list_studies``
        when :attr:`single`)."""
        return {
            name: getattr(self, name)
            for name in FILTER_NAMES
            if not isinstance(getattr(self, name), NotGiven)
        }

    @property
    def single(self) -> bool:
        """Does every filter hold at most one value (one list call can take them)?"""
        return not any(isinstance(getattr(self, name), tuple) for name in MULTI_VALUE_FILTERS)

    def several_values(self) -> list[dict[str, Any]]:
        """A ``failure_cases`` dict per filter holding several values (a list call takes
        one), empty when :attr:`single`."""
        return [
            {"field": name, "value": getattr(self, name), "reason": Reason.CONFLICT,
             "detail": "a list call takes one value per filter (fetch_studies takes several)"}
            for name in MULTI_VALUE_FILTERS
            if isinstance(getattr(self, name), tuple)
        ]

    def query_params(self) -> dict[str, str]:
        """The filters as the API's query parameters (``null`` for none). Raises
        ``ValidationError`` for a filter with several values: the API takes one.

        >>> StudyFilters(assigned_to=None, is_cancelled=True).query_params()
        {'assignedTo': 'null', 'isCancelled': 'true'}
        """
        return list_query_params(self)

    def partitions(self, split: Sequence[str] = MULTI_VALUE_FILTERS) -> list[StudyFilters]:
        """Disjoint single-value filters that together select exactly what these select:
        each filter named in ``split`` that is off is split into all its values, and each
        that holds several values into those. Every study has one severity, one viewer
        status and one cancelled flag, so the partitions cover the filters exactly once.

        >>> [p.is_cancelled for p in StudyFilters(severity="high",
        ...                                       study_viewer_status="complete").partitions()]
        [False, True]
        >>> len(StudyFilters(severity=("stat", "high")).partitions(split=()))
        2
        """
        dimensions: list[tuple[str, tuple[Any, ...]]] = []
        for name in MULTI_VALUE_FILTERS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                dimensions.append((name, tuple(v for v in _PARTITION_ORDER[name] if v in value)))
            elif isinstance(value, NotGiven) and name in split:
                dimensions.append((name, _PARTITION_ORDER[name]))
        names = [name for name, _ in dimensions]
        return [
            dataclasses.replace(self, **dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(values for _, values in dimensions))
        ]


def _is_collection(value: object) -> bool:
    """Several values: a list, tuple, set, array or Series (not a string or a mapping)."""
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))
