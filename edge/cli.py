"""``python -m edge`` / ``fer-kiosk``: the daemon and its tools."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import metadata

from edge import DEFAULT_MODEL, __version__
from edge.config import DEFAULT_MAX_PIXELS, EX_CONFIG, LOG_LEVELS
from edge.contract import EMOTIONS

_LOGGER = logging.getLogger(__name__)

# The entry-point group of the commands other packages add to fer-kiosk (pyproject.toml).
COMMANDS_GROUP = "fer_kiosk.commands"


def _evaluate(args: argparse.Namespace) -> int:
    from edge.tools.evaluate import load_classifier, run

    return run(args, load_classifier)


def _load(args: argparse.Namespace):
    """The validated config, or None after printing why it is invalid."""
    from edge.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as err:
        print(f"error: invalid configuration {err}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    from edge.config import ConfigError
    from edge.daemon.service import build_pipeline, check_inputs

    config = _load(args)
    if config is None:
        return EX_CONFIG
    try:
        warnings = check_inputs(config)  # every file run opens: credentials, TLS, spool
    except ConfigError as err:
        print("\n".join(f"error: {line}" for line in err.errors), file=sys.stderr)
        return EX_CONFIG
    try:
        pipeline = build_pipeline(config)
    except Exception as err:  # noqa: BLE001 - any model/detector failure is reported, in one line
        print(f"error: {err}", file=sys.stderr)
        return EX_CONFIG
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"{args.config or 'defaults'}: valid (fer-kiosk {__version__})")
    print(
        f"  model: {pipeline.classifier.model_path} ({pipeline.classifier.contract.model_format}, "
        f"{pipeline.classifier.runtime})"
    )
    print(
        f"  camera: {config.camera.display_name}  broker: {config.mqtt.host}:{config.mqtt.port}  "
        f"topics: {config.base_topic}/"
    )
    return 0


def with_source(config, source: str):
    """``config`` with camera.source replaced by a command-line ``--source``: a device index,
    /dev/videoN, a stream URL or a video file, checked like the key it replaces."""
    import dataclasses
    import os

    from edge.config import ConfigError, is_file_path, parse_config

    value: int | str = int(source) if source.isdigit() else source
    if isinstance(value, str) and is_file_path(value):
        if not os.path.isfile(value):
            raise ConfigError([f"--source {value}: no such video file"], "command line")
        value = os.path.abspath(value)
    checked = parse_config({"camera": {"source": value}}, "--source").camera.source
    return dataclasses.replace(config, camera=dataclasses.replace(config.camera, source=checked))


def _run(args: argparse.Namespace) -> int:
    from edge.config import ConfigError
    from edge.daemon import service
    from edge.vision.classifier import ContractError
    from edge.vision.detect import DetectorError

    config = _load(args)
    if config is not None and args.source is not None:
        try:
            config = with_source(config, args.source)
        except ConfigError as err:
            print("error: " + "; ".join(err.errors), file=sys.stderr)
            config = None
    if config is None:
        logging.getLogger("edge").error("invalid configuration; not starting (exit %d)", EX_CONFIG)
        return EX_CONFIG
    logging.getLogger().setLevel(args.log_level or config.log_level)
    try:
        return service.run(config, args.config, log_level=args.log_level)
    except (ContractError, DetectorError, ConfigError) as err:  # a file that run cannot use
        logging.getLogger("edge").error("%s", err)
        return EX_CONFIG


def _classify(args: argparse.Namespace) -> int:
    import dataclasses

    from edge.camera.images import ImageError, read_image
    from edge.config import parse_config
    from edge.daemon.service import build_pipeline
    from edge.vision.pipeline import PHOTO_DETECTOR

    try:
        config = parse_config({"model": {"path": args.model or ""}})
        pipeline = build_pipeline(dataclasses.replace(config, detector=PHOTO_DETECTOR))
    except Exception as err:  # noqa: BLE001 - one clear line for any start-up failure
        print(f"error: {err}", file=sys.stderr)
        return 1
    labels = pipeline.classifier.labels
    failed = 0
    for path in args.images:
        try:  # refused above the pixel limit before decoding; damaged files named as such
            image = read_image(path, args.max_pixels or DEFAULT_MAX_PIXELS)
        except ImageError as err:
            failed += 1
            result = {"image": path, "error": err.reason}
            print(
                json.dumps(result) if args.json else f"{path}: error: {err.reason}",
                file=sys.stdout if args.json else sys.stderr,
            )
            continue
        faces = []
        for face in pipeline.process(image):
            best = int(face.probabilities.argmax())
            faces.append(
                {
                    "box": list(face.box),
                    "emotion": labels[best],
                    "confidence": round(float(face.probabilities[best]), 4),
                    "probabilities": {k: round(float(v), 4) for k, v in zip(labels, face.probabilities)},
                }
            )
        if args.json:
            print(json.dumps({"image": path, "faces": faces}))
        else:
            print(f"{path}: {len(faces)} face(s)")
            for face in faces:
                print(f"  {face['emotion']:<9} {face['confidence']:.2f}  box {face['box']}")
    return 1 if failed else 0


def _watch(args: argparse.Namespace) -> int:
    from edge.tools.watch import watch

    config = _load(args)
    if config is None:
        return EX_CONFIG
    return watch(config, all_devices=args.all, raw=args.json, duration=args.duration)


def _unregister(args: argparse.Namespace) -> int:
    """Clears what the kiosk left retained on the broker: its Home Assistant discovery (the
    device disappears from Home Assistant), state, camera and availability."""
    import threading
    import time

    from edge.mqtt.homeassistant import removal_messages
    from edge.mqtt.payloads import Topics
    from edge.mqtt.subscriber import SubscriberError, connect_subscriber

    config = _load(args)
    if config is None:
        return EX_CONFIG
    topics = Topics(config.base_topic)
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    availability: list[bytes] = []
    subscribed = threading.Event()

    def on_message(topic: str, payload: bytes, retained: bool) -> None:
        availability.append(payload)

    try:
        client = connect_subscriber(
            config.mqtt,
            [topics.availability],
            on_message,
            "fer-kiosk-unregister",
            lambda connected, text: subscribed.set(),
        )
    except SubscriberError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    client.loop_start()
    try:
        subscribed.wait(5)
        time.sleep(0.5)  # the retained availability arrives right after subscribing
        if availability and availability[-1] == b"online" and not args.force:
            print(
                f"error: {config.device_id} is online: stop its daemon first (systemctl stop fer-kiosk), "
                "or it publishes everything again; --force to clear anyway",
                file=sys.stderr,
            )
            return 1
        messages = removal_messages(config.homeassistant.discovery_prefix, config.device_id, topics, EMOTIONS)
        for message in messages:
            client.publish(message.topic, message.payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    print(
        f"removed {len(messages)} retained topics of {config.device_id} from {where} "
        "(Home Assistant discovery, state, camera, availability, bridge)"
    )
    return 0


def add_plugin_commands(sub, entry_points=None) -> None:
    """The commands other packages add (the dashboard), found through their entry points:
    edge never imports them, so the packages depend one way only (dashboard -> edge). One that
    cannot be loaded (a broken install) is left out with a warning, not a traceback of every
    other command."""
    found = entry_points if entry_points is not None else metadata.entry_points(group=COMMANDS_GROUP)
    for entry in sorted(found, key=lambda e: e.name):
        try:
            command = entry.load()
            parser = sub.add_parser(entry.name, help=command.HELP)
            command.add_arguments(parser)
        except Exception as err:  # whatever a broken plugin raises: the other commands still work
            _LOGGER.warning("fer-kiosk %s is unavailable: %s: %s", entry.name, type(err).__name__, err)
            continue
        parser.set_defaults(handler=command.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fer-kiosk",
        description="Facial-emotion events for a service-counter kiosk: the daemon (run) and its "
        "tools. 'fer-kiosk COMMAND --help' tells more of each.",
    )
    parser.add_argument("--version", action="version", version=f"fer-kiosk {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=LOG_LEVELS,
        help="overrides the config's log_level",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from edge.tools.evaluate_options import add_arguments

    ev = sub.add_parser(
        "evaluate",
        help="accuracy, balanced accuracy, macro-F1, per-class figures and "
        "confusion matrix on FER2013, a folder of labelled faces or photos, or the model card",
    )
    add_arguments(
        ev,
        str(DEFAULT_MODEL),
        "a .tflite with its .json (default: the bundled model; a .keras model: python -m training.evaluate)",
    )
    ev.set_defaults(handler=_evaluate)

    run = sub.add_parser("run", help="the daemon: camera -> faces -> emotions -> MQTT")
    run.add_argument("--config", default=None, help="config.yaml (default: built-in defaults)")
    run.add_argument(
        "--source",
        default=None,
        metavar="SOURCE",
        help="overrides camera.source: a camera index, /dev/videoN, a video file or a stream URL",
    )
    run.set_defaults(handler=_run)

    check = sub.add_parser("check", help="validate a config (and load its model) without running")
    check.add_argument("--config", default=None)
    check.set_defaults(handler=_check)

    cl = sub.add_parser("classify", help="faces and emotions in photos, through the daemon's pipeline")
    cl.add_argument("images", nargs="+", help="photos: PNG, JPEG, BMP, WebP, TIFF or PNM (not GIF)")
    cl.add_argument("--model", default=None, help="a .tflite with its .json (default: the bundled model)")
    cl.add_argument("--json", action="store_true", help="one JSON object per image")
    cl.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help=f"refuse larger images before decoding them (default {DEFAULT_MAX_PIXELS}, "
        "camera.max_frame_pixels' default; a 24-megapixel phone photo needs --max-pixels 24000000)",
    )
    cl.set_defaults(handler=_classify)

    w = sub.add_parser("watch", help="show live events and device state from the broker")
    w.add_argument("--config", default=None, help="config.yaml, for the broker and topics")
    w.add_argument(
        "--all", action="store_true", help="every device under the topic prefix, not only this one"
    )
    w.add_argument("--json", action="store_true", help="print raw JSON messages")
    w.add_argument("--duration", type=float, default=0, help="exit after this many seconds (0: until Ctrl-C)")
    w.set_defaults(handler=_watch)

    un = sub.add_parser(
        "unregister", help="clear this kiosk's retained topics: Home Assistant forgets the device"
    )
    un.add_argument("--config", default=None, help="config.yaml, for the broker, device id and topics")
    un.add_argument("--force", action="store_true", help="clear even though the kiosk is online")
    un.set_defaults(handler=_unregister)

    add_plugin_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from edge.daemon.systemd import log_handler

    logging.basicConfig(level=getattr(logging, args.log_level or "INFO"), handlers=[log_handler()])
    return args.handler(args)
