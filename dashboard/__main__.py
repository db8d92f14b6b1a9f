"""``fer-kiosk dashboard`` (or ``python -m dashboard``): serve the live dashboard page."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

EX_CONFIG = 78


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="dashboard.yaml: http.host/port, mqtt (broker, topic_prefix, read-only login), "
        "stale_seconds (default: built-in defaults, broker on localhost)",
    )


def run(args: argparse.Namespace) -> int:
    from dashboard.config import load_dashboard_config
    from dashboard.server import DashboardServer
    from edge.config import ConfigError
    from edge.mqtt import CredentialsError
    from edge.systemd import Notifier

    try:
        config = load_dashboard_config(args.config)
        logging.getLogger().setLevel(getattr(args, "log_level", None) or config.log_level)
        server = DashboardServer(config)
    except ConfigError as err:
        print(f"error: invalid configuration {err}", file=sys.stderr)
        return EX_CONFIG
    except CredentialsError as err:
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
    from edge.systemd import log_handler

    parser = argparse.ArgumentParser(prog="python -m dashboard", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, handlers=[log_handler()])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
