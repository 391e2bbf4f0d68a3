"""The sandbox's synthetic world: radiologists, express customers, API keys and studies.

``generate_world(studies, seed, now)`` is deterministic from ``seed`` and ``now``: the same
arguments give the same world, value for value (all but the API keys' bearer secrets, which
are always fresh). Studies are spread over the 90 days before
``now`` with a daily and weekly rhythm; severities are about 70 % normal, 20 % high, 10 % stat;
turnaround is drawn per severity from long-tailed lognormals (some studies breach the SLA
targets in ``SLA_TARGETS``); about 3 % are cancelled; recent studies are mostly still open.
Columns are built with numpy, so 100,000 studies take well under a few seconds.

The roster (``World.roster``, the user list) holds every assignee and creating user of a
study (all radiologists), a few radiologists who joined lately and have no studies yet, and
staff who are not radiologists (technologists, coordinators, front desk ...); two users
with studies have had their access revoked (the sandbox retrieves them but does not list
them). It is drawn from a random stream of its own, after the studies, so the studies of a
seed are the same whatever the roster holds; ``users=`` sets its size.

>>> from datetime import datetime, timezone
>>> world = generate_world(200, seed=7, now=datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc))
>>> len(world.studies["study_id"]), world.studies["study_id"][0][:4]
(200, 'stu_')
>>> generate_world(200, seed=7, now=world.now).studies == world.studies
True
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import numpy as np
import orjson

__all__ = [
    "World",
    "generate_world",
    "SLA_TARGETS",
    "STUDY_CATALOG",
    "UID_ROOT",
    "HISTORY_DAYS",
    "format_timestamp",
    "draw_study_description",
    "draw_metadata",
    "draw_turnaround_minutes",
    "NEW_RADIOLOGISTS",
]

#: Turnaround targets per severity, in minutes (stat 1 h, high 4 h, normal 24 h).
SLA_TARGETS: Final = {"stat": 60.0, "high": 240.0, "normal": 1440.0}
#: The world's studies are created within this many days before ``now``.
HISTORY_DAYS: Final = 90
#: The DICOM UID root of synthetic Study Instance UIDs (a root for test and example data).
UID_ROOT: Final = "1.2.826.0.1.3680043.8.498"

_SEVERITIES: Final = ("normal", "high", "stat")
_SEVERITY_P: Final = np.array([0.70, 0.20, 0.10])

# Median turnaround (minutes) and lognormal sigma per severity: stat ~ minutes to an hour,
# high ~ hours, normal ~ up to a day, each with a long tail past its SLA target.
_TURNAROUND: Final = {"stat": (22.0, 0.85), "high": (110.0, 0.85), "normal": (480.0, 0.95)}

#: (description, modality, body part, weight for normal, high, stat studies).
STUDY_CATALOG: Final[tuple[tuple[str, str, str, float, float, float], ...]] = (
    ("XR Chest 2 Views", "XR", "Chest", 14, 8, 4),
    ("XR Chest 1 View Portable", "XR", "Chest", 4, 8, 10),
    ("XR Knee 3 Views Left", "XR", "Knee", 3, 1, 0.2),
    ("XR Knee 3 Views Right", "XR", "Knee", 3, 1, 0.2),
    ("XR Lumbar Spine 2-3 Views", "XR", "Spine", 3, 1, 0.3),
    ("XR Hand 3 Views", "XR", "Hand", 2, 1.5, 0.5),
    ("XR Ankle 3 Views", "XR", "Ankle", 2, 1.5, 0.5),
    ("XR Abdomen 1 View", "XR", "Abdomen", 2, 2, 1),
    ("CT Head without Contrast", "CT", "Head", 5, 9, 22),
    ("CT Chest/Abdomen/Pelvis with Contrast", "CT", "Chest/Abdomen/Pelvis", 6, 9, 9),
    ("CT Abdomen/Pelvis with Contrast", "CT", "Abdomen/Pelvis", 5, 8, 8),
    ("CT Chest without Contrast", "CT", "Chest", 4, 4, 2),
    ("CT Angiography Chest (PE Protocol)", "CT", "Chest", 1, 5, 12),
    ("CT Cervical Spine without Contrast", "CT", "Spine", 1.5, 4, 8),
    ("CT Angiography Head and Neck", "CT", "Head/Neck", 0.5, 3, 9),
    ("MRI Brain without Contrast", "MR", "Brain", 4, 3, 2),
    ("MRI Brain with and without Contrast", "MR", "Brain", 3, 3, 1),
    ("MRI Lumbar Spine without Contrast", "MR", "Spine", 4, 1.5, 0.5),
    ("MRI Knee without Contrast Left", "MR", "Knee", 2, 0.5, 0.1),
    ("MRI Knee without Contrast Right", "MR", "Knee", 2, 0.5, 0.1),
    ("MRI Shoulder without Contrast", "MR", "Shoulder", 2, 0.5, 0.1),
    ("MRI Cervical Spine without Contrast", "MR", "Spine", 2, 1, 0.5),
    ("US Abdomen Complete", "US", "Abdomen", 5, 3, 1.5),
    ("US Right Upper Quadrant", "US", "Abdomen", 2, 3, 2),
    ("US Pelvis Transvaginal", "US", "Pelvis", 2, 2, 1.5),
    ("US Renal Complete", "US", "Kidney", 2, 1.5, 0.5),
    ("US Venous Duplex Lower Extremity Bilateral", "US", "Leg", 1.5, 3, 2),
    ("US Thyroid", "US", "Neck", 2, 0.5, 0.1),
    ("MG Screening Mammogram Bilateral", "MG", "Breast", 5, 0.3, 0.05),
    ("MG Diagnostic Mammogram Left", "MG", "Breast", 1, 1, 0.1),
    ("NM Bone Scan Whole Body", "NM", "Whole Body", 1, 0.5, 0.05),
    ("PET/CT Skull Base to Mid-Thigh", "PT", "Whole Body", 1.5, 0.8, 0.05),
)

_FIRST_NAMES: Final = (
    "Amelia", "Benjamin", "Carmen", "David", "Elena", "Farid", "Grace", "Hiroshi", "Isabel",
    "James", "Keiko", "Liam", "Maria", "Nikhil", "Olivia", "Pedro", "Quinn", "Rachel", "Samuel",
    "Tara", "Umar", "Valentina", "William", "Xin", "Yasmin", "Zachary", "Aisha", "Daniel",
    "Emily", "Gabriel", "Hannah", "Ivan", "Julia", "Kwame", "Laura", "Mohammed", "Nora",
    "Oscar", "Priya", "Robert", "Sofia", "Thomas", "Ursula", "Victor", "Wei", "Ingrid",
)
_LAST_NAMES: Final = (
    "Adams", "Bakshi", "Chen", "Dubois", "Eriksen", "Fernandez", "Goldberg", "Haddad", "Ito",
    "Johansson", "Kowalski", "Lindqvist", "Mensah", "Nakamura", "O'Connor", "Patel", "Quintero",
    "Rossi", "Schmidt", "Takahashi", "Usman", "Vasquez", "Williams", "Xu", "Yilmaz", "Zimmerman",
    "Novak", "Okafor", "Park", "Reyes", "Sato", "Brennan", "Castillo", "Nguyen", "Moreau",
    "Hughes", "Kim", "Larsen", "Mitchell", "Delgado", "Fischer", "Gupta", "Ivanova", "Jensen",
)
_MIDDLE_NAMES: Final = ("A.", "J.", "Marie", "Lee", "R.", "Anne", "K.", "Louise", "M.", "Ray")
_SUFFIX1: Final = ("MD", "MD", "MD", "MD", "DO", "MBBS")
_SUFFIX2: Final = ("PhD", "FACR", "Jr.", "MPH", "FRCR")

_CUSTOMER_NAMES: Final = (
    "St. Mary's Regional Medical Center", "Lakeside Community Hospital",
    "Northgate Orthopedic Clinic", "Riverside Imaging Associates", "Mercy General Hospital",
    "Pine Valley Urgent Care", "Harborview Cancer Institute", "Summit Family Health",
    "Westbrook Children's Hospital", "Eastside Sports Medicine", "Cedar Grove Women's Clinic",
    "Oakridge Veterans Clinic", "Bayfront Emergency Physicians", "Highland Neurology Group",
    "Meadowbrook Rural Health Network", "Central Valley Dialysis Partners",
    "Granite State Outpatient Imaging", "Sunrise Senior Care", "Blue Ridge Cardiology",
    "Coastal Spine & Pain Center", "Prairie Lakes Hospital", "Redwood Trauma Center",
)

_API_KEYS: Final = (
    ("PACS integration", True, 0.55),
    ("RIS bridge", True, 0.30),
    ("Teleradiology intake", True, 0.12),
    ("Legacy HL7 gateway", False, 0.03),
)

_SITES: Final = (
    "Main Campus", "North Pavilion", "East Outpatient Center", "Emergency Department",
    "West Imaging Suite", "Mobile Unit 2",
)
_PATIENT_CLASSES: Final = ("Emergency", "Inpatient", "Outpatient")
# Share of each patient class per severity (rows normal, high, stat).
_PATIENT_CLASS_P: Final = np.array([[0.06, 0.24, 0.70], [0.35, 0.45, 0.20], [0.75, 0.23, 0.02]])
_REFERRING: Final = tuple(
    f"Dr. {first} {last}"
    for first, last in zip(
        ("Alan", "Beatrice", "Carlos", "Deepa", "Edward", "Fatima", "George", "Helen", "Isaac",
         "Jasmine", "Kenji", "Lucia", "Marcus", "Naomi", "Owen", "Paula"),
        ("Whitfield", "Okoro", "Mendes", "Raman", "Burke", "Al-Sayed", "Lin", "Kaplan", "Mbeki",
         "Torres", "Watanabe", "Ferrari", "Holt", "Silva", "Garrity", "Novotny"),
        strict=True,
    )
)

# Relative study volume by hour of day (0-23): quiet nights, a morning peak, an afternoon peak.
_HOURLY: Final = np.array(
    [0.25, 0.2, 0.18, 0.18, 0.2, 0.3, 0.55, 0.9, 1.3, 1.5, 1.55, 1.45,
     1.2, 1.35, 1.45, 1.4, 1.2, 0.95, 0.75, 0.6, 0.5, 0.42, 0.35, 0.3]
)
# Relative volume by weekday, Monday first: weekends are about 40 % of a weekday.
_WEEKLY: Final = np.array([1.05, 1.0, 1.0, 1.0, 0.95, 0.45, 0.38])

_MS_PER_MIN: Final = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(repr=False)
class World:
    """A synthetic world, ready to insert: references as dicts, studies as columns.

    ``studies`` maps each column name to a list (all the same length); timestamps are ISO
    strings ``YYYY-MM-DDTHH:MM:SS.mmmZ``, absent values ``None``, ``metadata`` JSON text.
    Everything follows from ``seed`` and ``now`` except the API keys' bearer secrets, which
    are random (and never shown by ``repr``).
    """

    users: list[dict[str, Any]]
    customers: list[dict[str, Any]]
    api_keys: list[dict[str, Any]]
    studies: dict[str, list[Any]]
    now: datetime = field(default_factory=lambda: _default_now())
    seed: int = 0
    #: Every user of the world, as the user list serves them (see ``generate_world``).
    roster: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        # never the API keys' secrets
        return (
            f"<World seed={self.seed} now={format_timestamp(_epoch_ms(self.now))}: "
            f"{self.study_count} studies, {len(self.users)} radiologists with work, "
            f"{len(self.roster)} users, "
            f"{len(self.customers)} customers, {len(self.api_keys)} API keys>"
        )

    @property
    def study_count(self) -> int:
        """Number of studies in the world."""
        return len(self.studies["study_id"])


def _default_now() -> datetime:
    return datetime.now(timezone.utc).replace(second=0, microsecond=0)


def _as_utc(now: datetime | None) -> datetime:
    if now is None:
        return _default_now()
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


def _epoch_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def format_timestamp(epoch_ms: Any) -> Any:
    """ISO 8601 UTC text with milliseconds for epoch milliseconds (a number or a numpy array).

    >>> format_timestamp(1795796443197)
    '2026-11-27T16:20:43.197Z'
    """
    text = np.char.add(
        np.datetime_as_string(np.asarray(epoch_ms, dtype="int64").astype("datetime64[ms]"), unit="ms"),
        "Z",
    )
    return str(text) if text.ndim == 0 else text


def _hex_ids(rng: np.random.Generator, prefix: str, count: int) -> list[str]:
    blob = rng.bytes(16 * count).hex()
    return [prefix + blob[i : i + 32] for i in range(0, 32 * count, 32)]


def _uuid4s(rng: np.random.Generator, count: int) -> list[str]:
    out = []
    for raw in _hex_ids(rng, "", count):
        variant = "89ab"[int(raw[16], 16) & 3]
        out.append(f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-{variant}{raw[17:20]}-{raw[20:32]}")
    return out


def _radiologist_count(studies: int) -> int:
    # 20 for a small practice, growing mildly with volume, at most 60.
    return int(np.clip(round(20 + 10 * np.log10(max(studies, 1) / 1000)), 20, 60))


def _make_users(rng: np.random.Generator, count: int) -> list[dict[str, Any]]:
    ids = _hex_ids(rng, "usr_", count)
    users: list[dict[str, Any]] = []
    seen: set[str] = set()
    firsts = rng.permutation(len(_FIRST_NAMES))
    lasts = rng.permutation(len(_LAST_NAMES))
    for i, user_id in enumerate(ids):
        first = _FIRST_NAMES[firsts[i % len(firsts)]]
        last = _LAST_NAMES[lasts[(i * 7 + i // len(lasts)) % len(lasts)]]
        middle = _MIDDLE_NAMES[rng.integers(len(_MIDDLE_NAMES))] if rng.random() < 0.35 else None
        suffix1 = _SUFFIX1[rng.integers(len(_SUFFIX1))] if rng.random() < 0.92 else None
        suffix2 = (
            _SUFFIX2[rng.integers(len(_SUFFIX2))] if suffix1 is not None and rng.random() < 0.2 else None
        )
        local = f"{first}.{last}".lower().replace("'", "")
        email, n = f"{local}@avara-rad.example", 2
        while email in seen:
            email, n = f"{local}{n}@avara-rad.example", n + 1
        seen.add(email)
        users.append(
            {
                "user_id": user_id,
                "email": email,
                "first_name": first,
                "last_name": last,
                "middle_name": middle,
                "suffix1": suffix1,
                "suffix2": suffix2,
            }
        )
    return users


#: Radiologists of every roster who joined lately and have no studies yet.
NEW_RADIOLOGISTS: Final = 3
_DOMAIN: Final = "avara-rad.example"
# Staff who are not radiologists: (clinic role, share, suffix1, can manage studies share).
_STAFF: Final = (
    ("Imaging Technologist", 0.30, "RT", 0.6),
    ("Patient Care Coordinator", 0.15, None, 0.5),
    ("Front Desk Operator", 0.12, None, 0.0),
    ("Registered Nurse", 0.10, "RN", 0.2),
    ("Physician", 0.08, "MD", 0.3),
    ("Administrative Assistant", 0.08, None, 0.1),
    ("IT Administrator", 0.05, None, 0.0),
    ("Revenue Cycle Manager", 0.04, None, 0.0),
    ("Nuclear Medicine Physician", 0.04, "MD", 0.5),
    ("Other", 0.04, None, 0.0),
)
_DAY_MS: Final = 86_400_000


def _default_roster_size(pool: int) -> int:
    # the radiologists with studies, the new radiologists, and about one staff member for
    # every three radiologists
    return pool + NEW_RADIOLOGISTS + max(4, pool // 3)


def _roster(
    rng: np.random.Generator,
    pool: list[dict[str, Any]],
    columns: dict[str, list[Any]],
    complete: Any,
    cancelled: Any,
    now_ms: int,
    total: int,
) -> list[dict[str, Any]]:
    """Every user of the world: the study pool (radiologists), then the new radiologists and
    the staff, ``total`` in all. Drawn from ``rng`` alone (the studies are already made)."""
    seen = {u["email"] for u in pool}
    assigned = columns["assigned_to"]
    open_work = [a for a, done, gone in zip(assigned, complete.tolist(), cancelled.tolist(), strict=True)
                 if a is not None and not done and not gone]
    with_studies = set(assigned) | set(columns["created_by_user"])
    with_studies.discard(None)
    # two users with studies (open work first: it is theirs to hand over) lose their access
    candidates = sorted(set(open_work)) or sorted(with_studies)
    picked = rng.permutation(len(candidates))[: min(2, len(candidates))]
    revoked = {candidates[i] for i in picked.tolist()}
    keep = [u["user_id"] for u in pool if u["user_id"] not in revoked]
    owner = keep[int(rng.integers(len(keep)))] if keep else None

    def times(created_days: float | None, login_hours: float | None) -> tuple[str | None, str | None]:
        created = None if created_days is None else now_ms - int(created_days * _DAY_MS)
        login = None if login_hours is None else now_ms - int(login_hours * 3_600_000)
        if created is not None and login is not None:
            login = max(login, created + 60_000)
        return (
            None if created is None else str(format_timestamp(min(created, now_ms))),
            None if login is None else str(format_timestamp(min(login, now_ms))),
        )

    def phone() -> str | None:
        return f"555{int(rng.integers(10**7)):07d}" if rng.random() < 0.8 else None

    roster: list[dict[str, Any]] = []
    for user in pool:
        level = "owner" if user["user_id"] == owner else ("admin" if rng.random() < 0.1 else "member")
        gone = user["user_id"] in revoked
        since = None if rng.random() < 0.05 else HISTORY_DAYS + float(rng.uniform(5, 900))
        last_seen = float(rng.uniform(24 * 3, 24 * 20)) if gone else float(rng.exponential(14.0))
        created, login = times(since, last_seen)
        roster.append({
            **user,
            "phone_number": phone(),
            "clinic_role": "Radiologist",
            "level": level,
            "can_manage_studies": True,
            "has_dashboard_access": level != "member" or bool(rng.random() < 0.3),
            "invited_source": "dashboard" if rng.random() < 0.7 else "api",
            "created_at": created,
            "last_login_at": login,
            "revoked": gone,
        })
    extras = max(total - len(pool), 0)
    firsts = rng.permutation(len(_FIRST_NAMES))
    lasts = rng.permutation(len(_LAST_NAMES))
    ids = _hex_ids(rng, "usr_", extras)
    taken = {u["user_id"] for u in pool}
    staff_p = np.array([entry[1] for entry in _STAFF])
    for i, user_id in enumerate(ids):
        while user_id in taken:  # a 128-bit collision: never, but the IDs must be unique
            user_id = _hex_ids(rng, "usr_", 1)[0]
        taken.add(user_id)
        new_radiologist = i < NEW_RADIOLOGISTS or rng.random() < 0.25
        first = _FIRST_NAMES[firsts[(i + 17) % len(firsts)]]
        last = _LAST_NAMES[lasts[(i * 5 + i // len(lasts)) % len(lasts)]]
        middle = _MIDDLE_NAMES[rng.integers(len(_MIDDLE_NAMES))] if rng.random() < 0.3 else None
        created_days: float | None
        login_hours: float | None
        suffix1: str | None
        if new_radiologist:
            role, suffix1, manage = "Radiologist", _SUFFIX1[rng.integers(len(_SUFFIX1))], True
            if i == 2:  # one new radiologist cannot manage studies yet: not a reassignment target
                manage = False
            # joined in the last two weeks; some never logged in yet
            joined_days = float(rng.uniform(0, 14))
            created_days = joined_days
            login_hours = None if i == 0 or rng.random() < 0.4 else float(rng.uniform(0, 24 * joined_days))
        else:
            role, _, suffix, manage_p = _STAFF[int(rng.choice(len(_STAFF), p=staff_p))]
            suffix1 = suffix if suffix is not None and rng.random() < 0.7 else None
            manage = bool(rng.random() < manage_p)
            created_days = None if rng.random() < 0.03 else float(rng.uniform(1, 1500))
            login_hours = None if rng.random() < 0.1 else float(rng.exponential(72.0))
        level = "admin" if rng.random() < 0.08 else "member"
        local = f"{first}.{last}".lower().replace("'", "")
        email, n = f"{local}@{_DOMAIN}", 2
        while email in seen:
            email, n = f"{local}{n}@{_DOMAIN}", n + 1
        seen.add(email)
        created, login = times(created_days, login_hours)
        roster.append({
            "user_id": user_id,
            "email": email,
            "first_name": first,
            "last_name": last,
            "middle_name": middle,
            "suffix1": suffix1,
            "suffix2": None,
            "phone_number": phone(),
            "clinic_role": role,
            "level": level,
            "can_manage_studies": manage,
            "has_dashboard_access": level != "member" or bool(rng.random() < 0.3),
            "invited_source": "dashboard" if rng.random() < 0.7 else "api",
            "created_at": created,
            "last_login_at": login,
            "revoked": False,
        })
    return roster


def _make_customers(rng: np.random.Generator, studies: int) -> list[dict[str, Any]]:
    count = int(np.clip(round(8 + 3 * np.log10(max(studies, 1) / 100)), 8, len(_CUSTOMER_NAMES)))
    names = [_CUSTOMER_NAMES[i] for i in rng.permutation(len(_CUSTOMER_NAMES))[:count]]
    ids = _hex_ids(rng, "cus_", count)
    return [{"customer_id": cid, "name": name} for cid, name in zip(ids, names, strict=True)]


def _make_api_keys(rng: np.random.Generator) -> list[dict[str, Any]]:
    # Bearer secrets are the one random part of a world: drawn from the seed they would be
    # public knowledge, and a sandbox's keys must not be guessable.
    ids = _uuid4s(rng, len(_API_KEYS))
    return [
        {
            "api_key_id": key_id,
            "description": desc,
            "is_viewer_enabled": enabled,
            "secret": "sk-sandbox-" + secrets.token_hex(16),
        }
        for key_id, (desc, enabled, _) in zip(ids, _API_KEYS, strict=True)
    ]


def _zipf_weights(rng: np.random.Generator, count: int, spread: float) -> Any:
    # A few busy radiologists / large customers, a tail of small ones.
    weights = rng.permutation(1.0 / np.arange(1, count + 1) ** spread)
    return weights / weights.sum()


def draw_turnaround_minutes(rng: np.random.Generator, severity_codes: Any) -> Any:
    """Minutes from creation to completion, per severity code (0 normal, 1 high, 2 stat).

    >>> rng = np.random.default_rng(1)
    >>> minutes = draw_turnaround_minutes(rng, np.array([2] * 2000 + [0] * 2000))
    >>> float(np.median(minutes[:2000])) < 60 < float(np.median(minutes[2000:]))
    True
    """
    codes = np.asarray(severity_codes)
    medians = np.array([_TURNAROUND[s][0] for s in _SEVERITIES])[codes]
    sigmas = np.array([_TURNAROUND[s][1] for s in _SEVERITIES])[codes]
    minutes = np.exp(np.log(medians) + sigmas * rng.standard_normal(codes.shape[0]))
    return np.maximum(minutes, 1.0)


def draw_study_description(rng: np.random.Generator, severity_codes: Any) -> Any:
    """Indices into ``STUDY_CATALOG``, drawn with the catalog's weights for each severity."""
    codes = np.asarray(severity_codes)
    out = np.empty(codes.shape[0], dtype=np.int64)
    weights = np.array([entry[3:] for entry in STUDY_CATALOG], dtype=float)
    for code in range(len(_SEVERITIES)):
        mask = codes == code
        p = weights[:, code] / weights[:, code].sum()
        out[mask] = rng.choice(len(STUDY_CATALOG), size=int(mask.sum()), p=p)
    return out


def draw_metadata(
    rng: np.random.Generator,
    catalog_index: Any,
    accession_start: int,
    with_metadata: float = 0.9,
    severity_codes: Any = None,
) -> list[str | None]:
    """JSON metadata text per study, ``None`` for about 10 % of them.

    Keys: modality, bodyPart, site, accessionNumber, mostly referringPhysician, and with
    ``severity_codes`` a patientClass (stat studies come mostly from the emergency department).

    >>> rng = np.random.default_rng(0)
    >>> text = draw_metadata(rng, np.array([8]), 1000, with_metadata=1.0, severity_codes=[2])[0]
    >>> sorted(orjson.loads(text))[:3]
    ['accessionNumber', 'bodyPart', 'modality']
    """
    index = np.asarray(catalog_index)
    count = int(index.shape[0])
    has = rng.random(count) < with_metadata
    site_codes = rng.integers(len(_SITES), size=count)
    classes: list[str] = [""] * count
    if severity_codes is not None:
        cumulative = np.cumsum(_PATIENT_CLASS_P, axis=1)[np.asarray(severity_codes)]
        drawn = (rng.random(count)[:, None] > cumulative).sum(axis=1)
        site_codes = np.where(drawn == 0, _SITES.index("Emergency Department"), site_codes)
        classes = [_CLASS_JSON[c] for c in drawn.tolist()]
    referring_codes = rng.integers(len(_REFERRING), size=count)
    has_referring = rng.random(count) < 0.85
    referring = [_REFERRING_JSON[r] if ok else "" for r, ok in zip(
        referring_codes.tolist(), has_referring.tolist(), strict=True
    )]
    # JSON assembled from pre-encoded fragments: the same text orjson.dumps gives, faster
    out: list[str | None] = [
        f'{_CATALOG_JSON[e]}{_SITE_JSON[s]},"accessionNumber":"ACC{accession_start + i:010d}"{r}{c}}}'
        if ok
        else None
        for i, (ok, e, s, r, c) in enumerate(
            zip(has.tolist(), index.tolist(), site_codes.tolist(), referring, classes, strict=True)
        )
    ]
    return out


def _json_text(value: str) -> str:
    return orjson.dumps(value).decode()


_CATALOG_JSON: Final = tuple(
    f'{{"modality":{_json_text(entry[1])},"bodyPart":{_json_text(entry[2])}' for entry in STUDY_CATALOG
)
_SITE_JSON: Final = tuple(f',"site":{_json_text(site)}' for site in _SITES)
_REFERRING_JSON: Final = tuple(f',"referringPhysician":{_json_text(r)}' for r in _REFERRING)
_CLASS_JSON: Final = tuple(f',"patientClass":{_json_text(c)}' for c in _PATIENT_CLASSES)


def _created_times(rng: np.random.Generator, count: int, now_ms: int) -> Any:
    # Hour slots over the history window, weighted by hour of day and weekday.
    first_slot = (now_ms - HISTORY_DAYS * 24 * 60 * _MS_PER_MIN) // 3_600_000
    last_slot = now_ms // 3_600_000
    slots = np.arange(first_slot, last_slot + 1, dtype=np.int64)
    hours = slots % 24
    weekdays = (slots // 24 + 3) % 7  # 1970-01-01 was a Thursday
    weights = _HOURLY[hours] * _WEEKLY[weekdays]
    lo = np.maximum(slots * 3_600_000, now_ms - HISTORY_DAYS * 24 * 60 * _MS_PER_MIN)
    hi = np.minimum((slots + 1) * 3_600_000, now_ms + 1)
    weights = weights * (hi - lo) / 3_600_000
    picked = rng.choice(slots.shape[0], size=count, p=weights / weights.sum())
    span = hi[picked] - lo[picked]
    return lo[picked] + (rng.random(count) * span).astype(np.int64)


def _pick(rng: np.random.Generator, values: list[str], p: Any, present: Any) -> list[str | None]:
    chosen = rng.choice(len(values), size=present.shape[0], p=p)
    return [values[c] if ok else None for c, ok in zip(chosen.tolist(), present.tolist(), strict=True)]


def generate_world(
    studies: int, seed: int = 0, now: datetime | None = None, *, users: int | None = None
) -> World:
    """Build a deterministic synthetic world of ``studies`` studies, as of ``now`` (UTC).

    ``now`` defaults to the current minute, so pass it for a reproducible world. ``users``
    is the size of the roster (default: the radiologists with studies, ``NEW_RADIOLOGISTS``
    more, and about a third as many staff); at least the radiologists the studies need
    (20-60, growing with ``studies``), else ``ValueError``. It changes no study.

    >>> from datetime import datetime, timezone
    >>> w = generate_world(50, seed=1, now=datetime(2026, 1, 5, tzinfo=timezone.utc))
    >>> sorted(set(w.studies["severity"])) <= ["high", "normal", "stat"], len(w.api_keys)
    (True, 4)
    """
    if studies < 0:
        raise ValueError(f"studies must be 0 or more, not {studies!r}")
    pool_size = _radiologist_count(studies)
    if users is not None and users < pool_size:
        raise ValueError(f"users must be at least {pool_size} for {studies} studies, not {users!r}")
    now = _as_utc(now)
    now_ms = _epoch_ms(now)
    rng = np.random.default_rng(seed)
    pool = _make_users(rng, pool_size)
    customers = _make_customers(rng, studies)
    api_keys = _make_api_keys(rng)
    n = studies

    created = np.sort(_created_times(rng, n, now_ms)) if n else np.zeros(0, dtype=np.int64)
    severity = rng.choice(3, size=n, p=_SEVERITY_P)
    turnaround_ms = (draw_turnaround_minutes(rng, severity) * _MS_PER_MIN).astype(np.int64)
    completed_at = created + turnaround_ms
    # Routine reads wait for the day shift: a normal study due between midnight and 07:00
    # is read in the morning instead (stat and high studies are read around the clock).
    hour = (completed_at // 3_600_000) % 24
    overnight = (severity == 0) & (hour < 7) & (rng.random(n) < 0.8)
    morning = (completed_at // 86_400_000) * 86_400_000 + 7 * 3_600_000
    completed_at = np.where(
        overnight, morning + (rng.exponential(90.0, n) * _MS_PER_MIN).astype(np.int64), completed_at
    )
    # A few studies fall through the cracks and stay open however old they get.
    stale = rng.random(n) < 0.004
    complete = (completed_at <= now_ms) & ~stale

    age = now_ms - created
    cancelled = (rng.random(n) < 0.03) & (age > _MS_PER_MIN)
    # Most cancellations come before the read (ordered in error, duplicate order); a few
    # after it (wrong patient found on review). Those cancelled before stay incomplete.
    cancelled_after_read = cancelled & complete & (rng.random(n) < 0.2)
    complete &= ~(cancelled & ~cancelled_after_read)
    cancel_delay = (np.exp(np.log(90.0) + 1.2 * rng.standard_normal(n)) * _MS_PER_MIN).astype(np.int64)
    after = np.where(cancelled_after_read, completed_at, created)
    cancelled_at = np.minimum(after + np.maximum(cancel_delay, _MS_PER_MIN), now_ms)

    # Open studies were often touched since creation (reassigned, severity bumped).
    touched = rng.random(n) < 0.3
    touched_at = created + (rng.random(n) * np.minimum(age, 6 * 3_600_000)).astype(np.int64)
    updated = np.where(complete, completed_at, np.where(touched, touched_at, created))
    updated = np.where(cancelled, cancelled_at, updated)

    user_ids = [u["user_id"] for u in pool]
    assigned_p = np.where(complete, 0.97, np.where(age < 2 * 3_600_000, 0.55, 0.85))
    assigned = _pick(rng, user_ids, _zipf_weights(rng, len(pool), 0.6), rng.random(n) < assigned_p)

    by_key = rng.random(n) < 0.85
    key_p = np.array([k[2] for k in _API_KEYS])
    created_by_api_key = _pick(rng, [k["api_key_id"] for k in api_keys], key_p, by_key)
    created_by_user = _pick(rng, user_ids, None, ~by_key)

    customer = _pick(
        rng, [c["customer_id"] for c in customers], _zipf_weights(rng, len(customers), 1.0),
        rng.random(n) < 0.9,
    )
    catalog_index = draw_study_description(rng, severity)
    metadata = draw_metadata(
        rng, catalog_index, accession_start=int(rng.integers(10**6, 10**8)), severity_codes=severity
    )

    created_text = format_timestamp(created)
    uids = [f"{UID_ROOT}.{seed % 10**6 + 1}.{ms}.{i + 1}" for i, ms in enumerate(created.tolist())]
    descriptions = [entry[0] for entry in STUDY_CATALOG]
    columns: dict[str, list[Any]] = {
        "study_id": _hex_ids(rng, "stu_", n),
        "study_instance_uid": uids,
        "study_description": [descriptions[i] for i in catalog_index.tolist()],
        "severity": [_SEVERITIES[c] for c in severity.tolist()],
        "study_viewer_status": np.where(complete, "complete", "incomplete").tolist(),
        "is_cancelled": cancelled.tolist(),
        "cancelled_at": [
            t if c else None
            for t, c in zip(format_timestamp(cancelled_at).tolist(), cancelled.tolist(), strict=True)
        ],
        "created_at": created_text.tolist(),
        "updated_at": format_timestamp(updated).tolist(),
        "assigned_to": assigned,
        "created_by_user": created_by_user,
        "created_by_api_key": created_by_api_key,
        "express_customer_id": customer,
        "metadata": metadata,
    }
    total = _default_roster_size(len(pool)) if users is None else users
    roster = _roster(
        np.random.default_rng([seed, 1]), pool, columns, complete, cancelled, now_ms, total
    )
    return World(
        users=pool, customers=customers, api_keys=api_keys, studies=columns, now=now, seed=seed,
        roster=roster,
    )
