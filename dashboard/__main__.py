"""``fer-kiosk dashboard`` (or ``python -m dashboard``): serve the live dashboard page;
``fer-kiosk dashboard export``: the kept visit summaries of a date range as CSV."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import date

from edge.config import EX_CONFIG

# What `fer-kiosk --help` says of this command (it joins fer-kiosk through pyproject's
# fer_kiosk.commands entry point).
HELP = (
    "serve the live web dashboard of every kiosk under the topic prefix; "
    "'dashboard export': its visit summaries as CSV"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("serve", "export"),
        default="serve",
        help="serve (default): the page; export: visit summaries as CSV (on the box: the page has no login)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="dashboard.yaml: http.host/port, mqtt (broker, topic_prefix, read-only login, client_id), "
        "store (path, retention_days), stale_seconds (default: built-in defaults, broker on localhost)",
    )
    export = parser.add_argument_group("export")
    export.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first day (default: today)")
    export.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last day, included (default: --from)")
    export.add_argument("--device", default=None, help="one kiosk only")
    export.add_argument("--out", default="-", help="CSV file to write (default: standard output)")
    export.add_argument(
        "--store",
        default=None,
        help="the store file (default: the config's store.path; a systemd install's is "
        "/var/lib/fer-kiosk-dashboard/dashboard.sqlite3)",
    )


def _day(text: str | None, name: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"error: {name} {text!r}: expected a date, YYYY-MM-DD") from None


def export(args: argparse.Namespace) -> int:
    """The summaries of the range, one CSV row each (cut-short visits included, marked
    ``counted`` 0), oldest first, with the dashboard's local times."""
    import csv

    from dashboard.config import load_dashboard_config
    from dashboard.store import CSV_COLUMNS, Store, StoreError
    from edge.config import ConfigError

    start = _day(args.start, "--from") or date.today()
    end = _day(args.end, "--to") or start
    if end < start:
        print(f"error: --to {end} is before --from {start}", file=sys.stderr)
        return 2
    try:
        path = args.store or load_dashboard_config(args.config).store_path
        store = Store(path, readonly=True)
    except ConfigError as err:
        print(f"error: invalid configuration {err}", file=sys.stderr)
        return EX_CONFIG
    except StoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = sys.stdout if args.out == "-" else open(args.out, "w", newline="", encoding="utf-8")  # noqa: SIM115
    try:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        rows = 0
        for row in store.csv_rows(start, end, args.device):
            writer.writerow(row)
            rows += 1
    finally:
        if out is not sys.stdout:
            out.close()
        store.close()
    where = "" if args.out == "-" else f" to {args.out}"
    print(f"{rows} visit summaries from {start} to {end}{where}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", "serve") == "export":
        return export(args)
    from dashboard.config import load_dashboard_config
    from dashboard.server import DashboardServer
    from dashboard.store import StoreError
    from edge.config import ConfigError
    from edge.daemon.systemd import Notifier
    from edge.mqtt.client import CredentialsError

    try:
        config = load_dashboard_config(args.config)
        logging.getLogger().setLevel(getattr(args, "log_level", None) or config.log_level)
        server = DashboardServer(config)
    except ConfigError as err:
        print(f"error: invalid configuration {err}", file=sys.stderr)
        return EX_CONFIG
    except (CredentialsError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EX_CONFIG
    except OSError as err:  # the port is taken, or the address is not this machine's
        print(
            f"error: cannot listen on {'http.host/http.port' if args.config else 'the default address'}: "
            f"{err}",
            file=sys.stderr,
        )
        return EX_CONFIG

    def stop(signum, _frame) -> None:
        logging.getLogger("dashboard").info("received %s; stopping", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    notifier = Notifier()
    notifier.ready(f"serving on {server.address[0]}:{server.address[1]}")
    server.serve_forever()
    notifier.stopping()
    return 0


def main(argv: list[str] | None = None) -> int:
    from edge.daemon.systemd import log_handler

    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, handlers=[log_handler()])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
