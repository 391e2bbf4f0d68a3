"""How a rule of the wire contract checks a value, or a whole column at once.

A :class:`Rule` knows its :class:`~viewerkit.errors.Reason` and the sandbox's wording of it;
``check`` gives every :class:`Failure` of one value, ``check_column`` every failure in a
pyarrow array or pandas Series, vectorised with ``pyarrow.compute`` (row positions), and the
two always agree. The kinds: :class:`Pattern` (identifiers, the DICOM UID), :class:`Choice`
(enums), :class:`Text`, :class:`Flag`, :class:`WholeNumber`, :class:`Metadata`. Which field
obeys which rule is the table in ``viewerkit.schema`` (``RULES``, ``FIELDS``, ...).

>>> [(f.row, f.reason.name) for f in Choice("severity", ("normal", "stat"),
...                                       Reason.NOT_SEVERITY).check_column(["stat", "x"])]
[(1, 'NOT_SEVERITY')]
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Union

import numpy as np
import pyarrow as pa

from viewerkit.errors import SECRET_FIELDS, Reason

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "META_PREFIX",
    "Column",
    "Failure",
    "Rule",
    "Pattern",
    "Choice",
    "Text",
    "Flag",
    "WholeNumber",
    "Metadata",
]

#: Prefix of the study table's metadata columns: key ``site`` is column ``meta.site``.
META_PREFIX: Final = "meta."

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

        >>> from viewerkit.schema import RULES
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
        >>> from viewerkit.schema import RULES
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

    >>> from viewerkit.schema import RULES
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

    >>> from viewerkit.schema import RULES
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

    >>> from viewerkit.schema import RULES
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

    >>> from viewerkit.schema import RULES
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

    >>> from viewerkit.schema import RULES
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

    >>> from viewerkit.schema import RULES
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
        >>> failures = Metadata("metadata", 50, 100, 1000).check_meta_columns(
        ...     {"meta.": pa.array([None, "x"])})
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
