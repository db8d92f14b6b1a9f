"""Tables (Markdown, readable in a terminal too), the headline speed-up and the target checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Result = dict[str, Any]

TARGETS = {
    "cpu_percent": 35.0,  # of one core, 640x480 at 30 fps
    "latency_p95_ms": 50.0,
    "recall": 0.98,
    "speedup": 5.0,
}


def _ok(result: Result) -> bool:
    return "error" not in result


def _runs(
    results: Iterable[Result], pipeline: str | None = None, modes: tuple[str, ...] = ()
) -> list[Result]:
    return [
        r
        for r in results
        if _ok(r) and (pipeline is None or r["pipeline"] == pipeline) and (not modes or r["mode"] in modes)
    ]


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pair(p: dict | None, digits: int = 1) -> str:
    return "–" if not p or p.get("p50") is None else f"{p['p50']:.{digits}f} / {p['p95']:.{digits}f}"


def _recall(result: Result) -> str:
    detection = result.get("detection")
    if not detection:
        return "–"
    if detection["recall"] is None:
        return f"n/a: no faces ({detection['extra']} extra)"
    return f"{100 * detection['recall']:.1f} % ({detection['extra']} extra)"


def _arrival(result: Result) -> str:
    """First frame to `new`, p50 / p95 ms, and the people who never got one."""
    arrival = result.get("first_frame_to_new_ms")
    if not arrival or not arrival["people"]:
        return "–"
    missed = f", {arrival['missed']} missed" if arrival["missed"] else ""
    return f"{_pair(arrival)}{missed}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def throughput_table(results: list[Result]) -> str:
    stages = ("decode", "grayscale", "detect", "preprocess", "classify", "track", "publish")
    header = [
        "clip",
        "size",
        "pipeline",
        "fps",
        "CPU ms/frame",
        *[f"{s} ms p50 / p95" for s in stages],
        "full detections",
        "motion searches",
        "crops classified",
        "peak RSS MB",
        "recall",
        "first frame to new ms p50 / p95",
    ]
    rows = [
        [
            r["scene"],
            r["size"],
            r["pipeline"],
            _num(r["fps"]),
            _num(r["cpu_ms_per_frame"], 2),
            *[_pair(r["stages_ms"][s], 2) for s in stages],
            f"{r.get('full_detections', r['frames_processed'])} of {r['frames_processed']}",
            str(r.get("motion_searches", "–")),
            str(r["classified"]),
            _num(r["peak_rss_mb"]),
            _recall(r),
            _arrival(r),
        ]
        for r in _runs(results, modes=("throughput",))
    ]
    return markdown_table(header, rows)


def realtime_table(results: list[Result]) -> str:
    header = [
        "clip",
        "size",
        "pipeline",
        "broker",
        "CPU % of one core",
        "frames skipped (passed over idle)",
        "event latency ms p50 / p95 (n)",
        "publish ms per call p50 / p95",
        "events",
        "peak RSS MB",
        "recall",
        "first frame to new ms p50 / p95",
    ]
    rows = []
    for r in _runs(results, modes=("realtime", "realtime-broker")):
        latency = r["latency_ms"]
        events = ", ".join(f"{k} {v}" for k, v in sorted(r["events"].items())) or "none"
        rows.append(
            [
                r["scene"],
                r["size"],
                r["pipeline"],
                "yes" if r["mode"] == "realtime-broker" else "no",
                _num(r["cpu_percent_one_core"]),
                f"{r['frames_skipped']} of {r['frames_total']} ({r.get('frames_passed_over_idle', 0)})",
                f"{_pair(latency)} ({latency['count']})",
                _pair(r.get("publish_call_ms"), 2),
                events,
                _num(r["peak_rss_mb"]),
                _recall(r),
                _arrival(r),
            ]
        )
    return markdown_table(header, rows)


def speedups(results: list[Result]) -> list[Result]:
    """CPU per frame, baseline / fast, for each clip measured in throughput mode by both."""
    fast = {(r["scene"], r["size"]): r for r in _runs(results, "fast", ("throughput",))}
    rows = []
    for base in _runs(results, "baseline", ("throughput",)):
        mine = fast.get((base["scene"], base["size"]))
        if mine and mine["cpu_ms_per_frame"] and base["cpu_ms_per_frame"] is not None:
            rows.append(
                {
                    "scene": base["scene"],
                    "size": base["size"],
                    "faces": mine.get("detection", {}).get("reference_faces"),
                    "baseline_cpu_ms_per_frame": base["cpu_ms_per_frame"],
                    "fast_cpu_ms_per_frame": mine["cpu_ms_per_frame"],
                    "speedup": round(base["cpu_ms_per_frame"] / mine["cpu_ms_per_frame"], 2),
                }
            )
    return rows


def speedup_table(rows: list[Result]) -> str:
    return markdown_table(
        ["clip", "size", "faces", "thesis loop CPU ms/frame", "edge pipeline CPU ms/frame", "speed-up"],
        [
            [
                r["scene"],
                r["size"],
                str(r["faces"]),
                _num(r["baseline_cpu_ms_per_frame"], 2),
                _num(r["fast_cpu_ms_per_frame"], 2),
                f"**{r['speedup']:.1f}x**",
            ]
            for r in rows
        ],
    )


def target_checks(results: list[Result], rows: list[Result]) -> list[Result]:
    """The targets the clip benchmark can judge (footprint targets: bench.footprint)."""
    checks = []
    live = _runs(results, "fast", ("realtime", "realtime-broker"))
    for r in (r for r in live if r["size"] == "640x480"):
        where = f"{r['scene']} {r['size']} {r['mode']}"
        checks.append(
            {
                "target": "every frame processed",
                "where": where,
                "value": f"{r['frames_skipped']} skipped",
                "met": r["every_frame_processed"],
            }
        )
        checks.append(
            {
                "target": f"CPU <= {TARGETS['cpu_percent']:.0f} % of one core",
                "where": where,
                "value": f"{r['cpu_percent_one_core']} %",
                "met": r["cpu_percent_one_core"] <= TARGETS["cpu_percent"],
            }
        )
        p95 = r["latency_ms"]["p95"]
        if p95 is not None:
            checks.append(
                {
                    "target": f"p95 frame-to-event latency <= {TARGETS['latency_p95_ms']:.0f} ms",
                    "where": where,
                    "value": f"{p95} ms",
                    "met": p95 <= TARGETS["latency_p95_ms"],
                }
            )
    for r in _runs(results, "fast", ("throughput",)):
        value = r.get("detection", {}).get("recall")
        if value is not None:
            checks.append(
                {
                    "target": f"recall >= {100 * TARGETS['recall']:.0f} % of full-resolution detection",
                    "where": f"{r['scene']} {r['size']}",
                    "value": f"{100 * value:.1f} %",
                    "met": value >= TARGETS["recall"],
                }
            )
    # on a clip without faces the thesis loop only detects: judged where there are people
    for row in (row for row in rows if row["faces"] != 0):
        checks.append(
            {
                "target": f">= {TARGETS['speedup']:.0f}x CPU per frame vs the thesis loop",
                "where": f"{row['scene']} {row['size']}",
                "value": f"{row['speedup']}x",
                "met": row["speedup"] >= TARGETS["speedup"],
            }
        )
    return checks


def checks_table(checks: list[Result]) -> str:
    return markdown_table(
        ["target", "where", "measured", "met"],
        [[c["target"], c["where"], c["value"], "yes" if c["met"] else "**NO**"] for c in checks],
    )


def render(report: Result) -> str:
    meta = report["meta"]
    parts = [
        f"fer-kiosk benchmark {meta['started']} on {meta['cpu']} ({meta['cores']} cores), "
        f"load average {meta['load_before']} before / {meta['load_after']} after"
        + (f"; note: {meta['note']}" if meta.get("note") else ""),
        f"clips: {meta['seconds']:g} s at 30 fps, faces from {meta['faces']}; "
        f"baseline model: {meta['keras_model']}"
        + (
            f"; edge pipeline settings changed: {', '.join(meta['overrides'])}"
            if meta.get("overrides")
            else ""
        )
        + "".join(
            f"; fast:{name}: {', '.join(settings)}" for name, settings in (meta.get("variants") or {}).items()
        ),
        "",
        "## Throughput: every frame, as fast as it goes (wall-clock stage times)",
        throughput_table(report["runs"]),
        "",
        "## Real time: the clip played at 30 fps like a camera",
        realtime_table(report["runs"]),
    ]
    if report["speedups"]:
        parts += [
            "",
            "## HEADLINE: CPU per frame, thesis loop / edge pipeline (same clip)",
            speedup_table(report["speedups"]),
        ]
    if report["checks"]:
        parts += ["", "## Targets", checks_table(report["checks"])]
    failed = [r for r in report["runs"] if not _ok(r)]
    if failed:
        parts += ["", "## Runs that failed"]
        parts += [f"- {r['scene']} {r['size']} {r['pipeline']} {r['mode']}: {r['error']}" for r in failed]
    return "\n".join(parts)
