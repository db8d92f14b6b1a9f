"""The dashboard's memory: visit summaries and alerts in SQLite (standard library).

Summaries only, never pixels: per visit its event id, device, times, length, dominant
emotion, how it ended and seconds per emotion; per alert its id, device, emotion,
probability and times. No face ids (they link the frames of one visit and mean nothing
after it). One file, WAL (the page reads while MQTT writes; ``fer-kiosk dashboard export``
reads while the dashboard runs), its schema version in ``PRAGMA user_version``, rows older
than ``store.retention_days`` deleted.

Days and hours are the dashboard's local calendar, fixed when a row is written.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import statistics
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.contract import EMOTIONS

_LOGGER = logging.getLogger(__name__)

# ended_by values whose length is not the customer's (docs/mqtt.md): kept, never counted.
CUT_SHORT = ("shutdown", "reload")

# One entry per schema version; a database is brought up to the newest, in order.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE visits (
        event_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        day TEXT NOT NULL,
        hour INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        dominant_emotion TEXT NOT NULL,
        ended_by TEXT NOT NULL,
        counted INTEGER NOT NULL,
        frames INTEGER,
        emotion_seconds TEXT NOT NULL
    );
    CREATE INDEX visits_day ON visits (day, device);
    CREATE INDEX visits_last_seen ON visits (last_seen);
    CREATE TABLE alerts (
        alert_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        emotion TEXT NOT NULL,
        probability REAL,
        since REAL NOT NULL,
        raised REAL NOT NULL,
        cleared REAL,
        reason TEXT,
        day TEXT NOT NULL
    );
    CREATE INDEX alerts_day ON alerts (day, device);
    CREATE INDEX alerts_raised ON alerts (raised);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

CSV_COLUMNS = (
    "event_id",
    "device",
    "first_seen",
    "last_seen",
    "duration_s",
    "dominant_emotion",
    "ended_by",
    "counted",
    "frames",
    *(f"{e}_s" for e in EMOTIONS),
)


class StoreError(Exception):
    """The store cannot be used (a file that is not ours, a newer schema, no permission)."""


@dataclass(frozen=True)
class Visit:
    event_id: str
    device: str
    first_seen: float
    last_seen: float
    duration_s: float
    dominant_emotion: str
    ended_by: str
    frames: int | None
    emotion_seconds: dict[str, float]

    @property
    def counted(self) -> bool:
        """Whether its length is the customer's: a visit the daemon cut short is not."""
        return self.ended_by not in CUT_SHORT


def parse_time(text: Any) -> float | None:
    """A payload's ISO-8601 UTC time (``2026-11-24T09:15:02.417Z``) as a Unix time, or None."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts).astimezone()
    return moment.isoformat(timespec="seconds")


def visit_from_event(device: str, event: dict[str, Any]) -> Visit | None:
    """The summary of an ``end`` event as a row, or None when it is not one."""
    summary = event.get("summary")
    if event.get("type") != "end" or not isinstance(summary, dict) or not event.get("event_id"):
        return None
    last = parse_time(summary.get("last_seen")) or parse_time(event.get("time"))
    if last is None:
        return None
    try:
        duration = max(0.0, float(summary.get("duration_s", 0.0)))
    except (TypeError, ValueError):
        return None
    first = parse_time(summary.get("first_seen")) or last - duration
    seconds = summary.get("emotion_seconds") if isinstance(summary.get("emotion_seconds"), dict) else {}
    frames = summary.get("frames")
    return Visit(
        event_id=str(event["event_id"]),
        device=device,
        first_seen=first,
        last_seen=last,
        duration_s=duration,
        dominant_emotion=str(summary.get("dominant_emotion", "none")),
        ended_by=str(summary.get("ended_by") or "left"),  # older daemons: no field, customer left
        frames=frames if isinstance(frames, int) else None,
        emotion_seconds={
            str(k): float(v) for k, v in seconds.items() if k in EMOTIONS and isinstance(v, (int, float))
        },
    )


def local_day(ts: float) -> date:
    return datetime.fromtimestamp(ts).astimezone().date()


_INSERT_VISIT = "INSERT OR IGNORE INTO visits VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


def _visit_row(visit: Visit) -> tuple:
    when = datetime.fromtimestamp(visit.last_seen).astimezone()
    return (
        visit.event_id,
        visit.device,
        visit.first_seen,
        visit.last_seen,
        when.date().isoformat(),
        when.hour,
        visit.duration_s,
        visit.dominant_emotion,
        visit.ended_by,
        int(visit.counted),
        visit.frames,
        json.dumps(visit.emotion_seconds),
    )


class Store:
    """One SQLite connection shared by the dashboard's threads, under a lock."""

    def __init__(self, path: str | Path, retention_days: float = 90.0, readonly: bool = False):
        self.path = str(path)
        self.retention_days = retention_days
        self._lock = threading.Lock()
        self._day_cache: dict[tuple[str, str], dict[str, Any]] = {}  # (day, device or "") -> figures
        self._devices: set[str] | None = None  # every device with a kept visit, once asked
        try:
            if readonly:
                if not Path(self.path).is_file():
                    raise StoreError(f"{self.path}: no such store (store.path, or --store)")
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            else:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate(readonly)
        except sqlite3.Error as err:
            raise StoreError(f"{self.path}: {err}") from None
        except OSError as err:
            raise StoreError(f"{self.path}: {err.strerror or err}") from None

    def _migrate(self, readonly: bool) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this fer-kiosk's ({SCHEMA_VERSION})"
            )
        if version == 0 and not readonly:
            tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise StoreError(f"{self.path}: an SQLite file that is not a dashboard store")
        if version < SCHEMA_VERSION:
            if readonly:
                raise StoreError(f"{self.path}: schema version {version}; start the dashboard to upgrade it")
            for number in range(version, SCHEMA_VERSION):
                script = MIGRATIONS[number]
                self._db.executescript(f"BEGIN; {script}; PRAGMA user_version={number + 1}; COMMIT;")
                _LOGGER.info("store %s: schema version %d", self.path, number + 1)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ---------------------------------------------------------------------------

    def add_visit(self, visit: Visit) -> bool:
        """Keeps a summary; False when its event_id is already kept (delivery is at least once)."""
        return self.add_visits([visit]) == 1

    def add_visits(self, visits: list[Visit]) -> int:
        """Keeps summaries in one transaction; how many were new."""
        added = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for visit in visits:
                    row = _visit_row(visit)
                    if self._db.execute(_INSERT_VISIT, row).rowcount:
                        added += 1
                        self._forget(row[4], visit.device)
                        if self._devices is not None:
                            self._devices.add(visit.device)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def alert_raised(
        self, device: str, alert_id: str, emotion: str, probability: float | None, since: float, raised: float
    ) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, device, emotion, probability, since, raised, day) "
                "VALUES (?,?,?,?,?,?,?)",
                (alert_id, device, emotion, probability, since, raised, local_day(raised).isoformat()),
            )
            if cursor.rowcount:
                self._forget(local_day(raised).isoformat(), device)
            return bool(cursor.rowcount)

    def alert_cleared(self, alert_id: str, cleared: float, reason: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE alerts SET cleared=?, reason=? WHERE alert_id=? AND cleared IS NULL",
                (cleared, reason, alert_id),
            )
            return bool(cursor.rowcount)

    def prune(self, now: float) -> int:
        """Deletes what is older than the retention; how many rows."""
        cutoff = now - self.retention_days * 86400
        with self._lock:
            removed = self._db.execute("DELETE FROM visits WHERE last_seen < ?", (cutoff,)).rowcount
            removed += self._db.execute("DELETE FROM alerts WHERE raised < ?", (cutoff,)).rowcount
            self._day_cache.clear()
            self._devices = None
        if removed:
            _LOGGER.info("store: deleted %d rows older than %s days", removed, self.retention_days)
        return removed

    def _forget(self, day: str, device: str) -> None:
        self._day_cache.pop((day, device), None)
        self._day_cache.pop((day, ""), None)

    # -- reads ----------------------------------------------------------------------------

    def visits(self, start: date, end: date, device: str | None = None) -> list[Visit]:
        """Every visit that ended on a local day from ``start`` to ``end`` (both included)."""
        query = (
            "SELECT event_id, device, first_seen, last_seen, duration_s, dominant_emotion, ended_by, "
            "frames, emotion_seconds FROM visits WHERE day >= ? AND day <= ?"
        )
        params: list[Any] = [start.isoformat(), end.isoformat()]
        if device:
            query += " AND device = ?"
            params.append(device)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY last_seen", params).fetchall()
        return [Visit(*row[:8], json.loads(row[8])) for row in rows]

    def today(self, day: date, device: str, last: int = 8) -> dict[str, Any]:
        """A tile's figures for one day: counted visits, median length, emotion share, and
        the last visits (those cut short too, marked)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT duration_s, dominant_emotion FROM visits WHERE day=? AND device=? AND counted=1",
                (day.isoformat(), device),
            ).fetchall()
            recent = self._db.execute(
                "SELECT last_seen, duration_s, dominant_emotion, ended_by FROM visits "
                "WHERE day=? AND device=? ORDER BY last_seen DESC, rowid DESC LIMIT ?",
                (day.isoformat(), device, last),
            ).fetchall()
        figures = _figures([r[0] for r in rows], [r[1] for r in rows])
        figures["date"] = day.isoformat()
        figures["last_visits"] = [
            {"ended": ts, "duration_s": round(d, 1), "dominant_emotion": e, "ended_by": by}
            for ts, d, e, by in recent
        ]
        return figures

    def devices_on(self, day: date) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT device FROM visits WHERE day=?", (day.isoformat(),))
            return [r[0] for r in rows.fetchall()]

    def recent_alerts(self, device: str, since: float, limit: int = 10) -> list[dict[str, Any]]:
        """Alerts of a device still open, or cleared after ``since``, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id, emotion, probability, since, raised, cleared, reason FROM alerts "
                "WHERE device=? AND (cleared IS NULL OR cleared >= ?) ORDER BY raised DESC LIMIT ?",
                (device, since, limit),
            ).fetchall()
        keys = ("alert_id", "emotion", "probability", "since", "raised", "cleared", "reason")
        return [dict(zip(keys, row)) for row in rows]

    def open_alerts(self, device: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT alert_id FROM alerts WHERE device=? AND cleared IS NULL", (device,)
            ).fetchall()
        return [r[0] for r in rows]

    def day_figures(self, day: date, device: str | None = None) -> dict[str, Any]:
        """One day's figures (cached for days that are over; a late summary clears its day)."""
        key = (day.isoformat(), device or "")
        cached = self._day_cache.get(key)
        if cached is not None:
            return cached
        where, params = "day=? AND counted=1", [day.isoformat()]
        if device:
            where, params = where + " AND device=?", [*params, device]
        with self._lock:
            rows = self._db.execute(f"SELECT duration_s, dominant_emotion FROM visits WHERE {where}", params)
            rows = rows.fetchall()
            alerts = self._db.execute(
                f"SELECT count(*) FROM alerts WHERE day=?{' AND device=?' if device else ''}", params
            ).fetchone()[0]
        figures = {"date": key[0], **_figures([r[0] for r in rows], [r[1] for r in rows]), "alerts": alerts}
        if day < local_day(datetime.now().timestamp()):
            self._day_cache[key] = figures
        return figures

    def hours(self, day: date, device: str | None = None) -> list[dict[str, Any]]:
        """Per hour of one day: counted visits and their emotion share."""
        where, params = "day=? AND counted=1", [day.isoformat()]
        if device:
            where, params = where + " AND device=?", [*params, device]
        with self._lock:
            rows = self._db.execute(
                f"SELECT hour, dominant_emotion, count(*) FROM visits WHERE {where} "
                "GROUP BY hour, dominant_emotion",
                params,
            ).fetchall()
        hours = [{"hour": h, "visits": 0, "by_emotion": {}} for h in range(24)]
        for hour, emotion, count in rows:
            hours[hour]["visits"] += count
            hours[hour]["by_emotion"][emotion] = count
        return hours

    def history(self, today: date, days: int, device: str | None = None) -> dict[str, Any]:
        return {
            "today": today.isoformat(),
            "device": device,
            "hours": self.hours(today, device),
            "days": [self.day_figures(today - timedelta(days=n), device) for n in range(days - 1, -1, -1)],
        }

    def all_devices(self) -> list[str]:
        """Every kiosk with a kept visit (read once, then kept up to date: a scan of a big
        store takes a tenth of a second)."""
        with self._lock:
            if self._devices is None:
                rows = self._db.execute("SELECT DISTINCT device FROM visits").fetchall()
                self._devices = {r[0] for r in rows}
            return sorted(self._devices)

    def csv_rows(self, start: date, end: date, device: str | None = None) -> Iterator[list[Any]]:
        for v in self.visits(start, end, device):
            yield [
                v.event_id,
                v.device,
                iso(v.first_seen),
                iso(v.last_seen),
                round(v.duration_s, 3),
                v.dominant_emotion,
                v.ended_by,
                int(v.counted),
                "" if v.frames is None else v.frames,
                *(round(v.emotion_seconds.get(e, 0.0), 3) for e in EMOTIONS),
            ]


def _figures(durations: list[float], emotions: list[str]) -> dict[str, Any]:
    visits = len(durations)
    counts = {e: emotions.count(e) for e in EMOTIONS if e in emotions}
    return {
        "visits": visits,
        "median_seconds": round(statistics.median(durations), 1) if visits else None,
        "emotion_share": {e: round(n / visits, 3) for e, n in counts.items()} if visits else {},
        "by_emotion": counts,
    }
