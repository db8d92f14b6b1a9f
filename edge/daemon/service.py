"""``fer-kiosk run``: assembles the real parts from the config and runs them as a service.

Life cycle, as systemd sees it (Type=notify):
- READY=1 once the config is valid, the model is loaded and the MQTT client started,
  camera or not: from then on the daemon can report;
- WATCHDOG=1 from the processing loop, frames or not: it proves the loop lives (a stuck
  loop stops the pings and systemd restarts the service). A camera that delivers no frame
  for camera.stall_seconds is the capture's to report (camera topic offline, no_frames)
  and to reopen;
- STATUS= a short line (fps or the camera's trouble, faces, broker);
- SIGHUP: RELOADING=1, the config is read again and applied (an invalid one is refused
  and the running config kept), READY=1;
- SIGTERM: STOPPING=1, open visits are ended (their summaries spooled), the retained state
  says stopped and availability offline, messages in flight are flushed, exit 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from edge import DEFAULT_MODEL, __version__
from edge.camera.capture import FrameSource
from edge.config import CameraConfig, Config, ConfigError, default_state_path, load_config
from edge.contract import VIEW_SETS
from edge.daemon.loop import ProcessingLoop
from edge.daemon.systemd import Notifier
from edge.mqtt.client import CredentialsError, credentials_warnings, resolve_credentials, tls_context
from edge.mqtt.delivery import Delivery
from edge.mqtt.homeassistant import discovery_messages
from edge.mqtt.payloads import OFFLINE, Message, Topics, camera_summary, stats_message
from edge.mqtt.spool import DiskSpool, SpoolError, check_spool_dir
from edge.mqtt.transport import Transport
from edge.vision.classifier import ContractError, EmotionClassifier
from edge.vision.detect import DetectorError, HaarFaceDetector
from edge.vision.matching import FaceMatcher
from edge.vision.pipeline import ClassifyPolicy, FramePipeline
from edge.visits.alerts import AlertRules
from edge.visits.tracking import FaceTracker

_LOGGER = logging.getLogger(__name__)

# How often systemd's STATUS line (and the spool's upkeep) is refreshed.
STATUS_INTERVAL_SECONDS = 5.0


def spool_dir(config: Config):
    return config.spool.path or default_state_path("spool")


def check_inputs(config: Config, environ=os.environ) -> list[str]:
    """Every file ``run`` will open besides the model and the cascade (which
    ``build_pipeline`` loads): the MQTT credentials, the TLS files, the spool folder.
    Raises ConfigError with one line per problem, each naming its key and file; returns
    warnings (a credentials file others may read)."""
    errors = []
    try:
        resolve_credentials(config.mqtt, environ)
    except CredentialsError as err:
        errors.append(str(err))
    if config.mqtt.tls.enabled:
        try:
            tls_context(config.mqtt.tls)
        except CredentialsError as err:
            errors.append(str(err))
    problem = check_spool_dir(spool_dir(config))
    if problem:
        errors.append(f"spool.path: {problem}")
    if errors:
        raise ConfigError(errors)
    return credentials_warnings(config.mqtt, environ)


def check_alert_emotions(config: Config, labels, model_name: str) -> None:
    """The alert rule names emotions the loaded model has (its contract's labels, which a
    model of one's own may choose): ConfigError otherwise."""
    unknown = [e for e in config.rules.alerts.emotions if e not in labels]
    if config.rules.alerts.enabled and unknown:
        raise ConfigError(
            [
                f"rules.alerts.emotions: {', '.join(unknown)} not among the model's labels "
                f"({', '.join(labels)}; {model_name})"
            ]
        )


def build_pipeline(config: Config) -> FramePipeline:
    """Model and detector; raises ContractError / DetectorError with a message naming the problem."""
    if config.detector.threads:
        cv2.setNumThreads(config.detector.threads)  # process-wide: the detector is OpenCV's main user
    model_path = config.model.path or str(DEFAULT_MODEL)
    views = None if config.model.views == "contract" else VIEW_SETS[config.model.views]
    classifier = EmotionClassifier(model_path, num_threads=config.model.num_threads, views=views)
    check_alert_emotions(config, classifier.labels, Path(model_path).name)
    policy = ClassifyPolicy.from_config(classifier.contract.views, config.model, config.tracking)
    return FramePipeline(
        HaarFaceDetector(config.detector),
        classifier,
        policy,
        ignore_zones=config.detector.ignore_zones,
        matcher=FaceMatcher.from_config(config.tracking),
    )


def build_publisher(
    config: Config, labels, current_state: Callable[[], list[Message]] = list, spool: DiskSpool | None = None
) -> Delivery:
    """Delivery over a transport to the broker of ``config.mqtt``, with its login, its last
    will (availability offline) and the spool. ``current_state``: the retained messages to
    send again after each connection (state, camera), besides discovery. Raises ConfigError
    when a credentials, TLS or spool file cannot be used."""
    topics = Topics(config.base_topic)

    def discovery():
        return discovery_messages(
            config.homeassistant.discovery_prefix,
            config.device_id,
            topics,
            labels,
            __version__,
            "mini-Xception int8 (FER2013)",
        )

    def on_connected():
        return (discovery() if config.homeassistant.enabled else []) + current_state()

    try:
        if spool is None:
            spool = DiskSpool(spool_dir(config), config.spool.max_messages, config.spool.max_age_days * 86400)
        credentials = resolve_credentials(config.mqtt)
        if credentials is not None:
            _LOGGER.info("MQTT credentials from %s", credentials.source)
        transport = Transport(
            config.mqtt,
            config.mqtt.client_id or f"fer-kiosk-{config.device_id}",
            will=(topics.availability, OFFLINE.encode()),
            tls_context=tls_context(config.mqtt.tls) if config.mqtt.tls.enabled else None,
            username=credentials.username if credentials else None,
            password=credentials.password if credentials else None,
        )
        publisher = Delivery(transport, spool, topics.availability, on_connected)
    except SpoolError as err:
        raise ConfigError([f"spool.path: {err}"]) from None
    except CredentialsError as err:
        raise ConfigError([str(err)]) from None

    if config.homeassistant.enabled:

        def on_ha_status(payload: bytes) -> None:
            if payload.strip() == b"online":  # Home Assistant restarted: it forgot the entities
                _LOGGER.info("Home Assistant is online; publishing discovery again")
                for message in discovery():
                    publisher.publish(message)

        publisher.transport.subscribe(f"{config.homeassistant.discovery_prefix}/status", on_ha_status)
    return publisher


RECORDING_DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class Parts:
    """How the service builds its parts from a config: the real ones by default; tests give
    fakes (a classifier without a model, a publisher without a broker, a scripted camera)."""

    check: Callable[[Config], list[str]] = check_inputs
    pipeline: Callable[[Config], FramePipeline] = build_pipeline
    publisher: Callable[..., Delivery] = build_publisher
    source: Callable[[CameraConfig], FrameSource] = FrameSource


class Service:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        notifier: Notifier | None = None,
        log_level: str | None = None,
        parts: Parts = Parts(),
    ):
        """``log_level``: the command line's --log-level, which outranks the config's, also
        after a reload."""
        self.config = config
        self.config_path = config_path
        self.log_level = log_level
        self.parts = parts
        self.notifier = notifier or Notifier()
        for warning in parts.check(config):  # ConfigError (exit 78) for a file run cannot use
            _LOGGER.warning("%s", warning)
        self.stop_event = threading.Event()
        self._reload_requested = threading.Event()
        self.started = time.monotonic()
        self.pipeline = parts.pipeline(config)
        self.tracker = FaceTracker(config.tracking, self.pipeline.classifier.labels)
        self.publisher = parts.publisher(config, self.pipeline.classifier.labels, self.current_state)
        self.source = parts.source(config.camera)
        self.loop = self._make_loop()

    def _make_loop(
        self, alerts: AlertRules | None = None, previous: ProcessingLoop | None = None
    ) -> ProcessingLoop:
        """The loop over the current parts; after a reload it keeps the previous loop's
        counters (stats are not reset by a reload) and, unless they changed, its alerts."""
        return ProcessingLoop(
            self.config,
            self.source,
            self.pipeline,
            self.tracker,
            self.publisher,
            clock=self.source.clock,  # a recording's own time, a camera's monotonic time
            wall_clock=self.source.wall_clock,
            alerts=alerts,
            stats=previous.stats if previous else None,
            collector=previous.collector if previous else None,
        )

    def current_state(self) -> list[Message]:
        """What a (re)connection publishes again besides discovery: the state and the camera."""
        camera = self.loop.camera_state()
        return [self.loop.state()] + ([camera] if camera is not None else [])

    def install_signal_handlers(self) -> None:
        def request_stop(signum, _frame) -> None:
            _LOGGER.info("received %s; stopping", signal.Signals(signum).name)
            self.stop_event.set()

        def request_reload(signum, _frame) -> None:
            self._reload_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGHUP, request_reload)

    def status_line(self) -> str:
        broker = "broker connected" if self.publisher.transport.connected else "broker unreachable"
        queued, unsaved = len(self.publisher.spool), self.publisher.spool.unsaved
        camera = self.source.status
        frames = (
            f"{self.loop.collector.fps():.1f} fps"
            if camera.online
            else f"camera offline ({camera.cause}): {camera.detail}"
        )
        return (
            f"{frames}, {len(self.tracker.present())} face(s), {broker}"
            + (f", {queued} summaries queued" if queued else "")
            + (f", {unsaved} not written to disk" if unsaved else "")
        )

    def run(self) -> int:
        c = self.config
        _LOGGER.info(
            "fer-kiosk %s: device %s, topics under %s/, camera %s",
            __version__,
            c.device_id,
            c.base_topic,
            c.camera.display_name,
        )
        self.publisher.start()
        self.source.start()
        next_watchdog = next_status = 0.0
        next_stats = time.monotonic() + c.mqtt.stats_interval_seconds
        # READY once the config, the model and the MQTT client are up, camera or not: a
        # missing camera is published (<prefix>/<device>/camera), not a reason for systemd
        # to kill and restart the service in a loop.
        _LOGGER.info("ready %.2f s after start", time.monotonic() - self.started)
        self.notifier.ready(self.status_line())
        try:
            while not self.stop_event.is_set():
                frame = self.loop.step(timeout=0.2)
                now = time.monotonic()
                if frame is None and self.source.finished:
                    _LOGGER.info("the recording has ended: stopping")
                    break
                # The watchdog checks that this loop is alive; the camera has its own topic.
                if self.notifier.watchdog_interval and now >= next_watchdog:
                    self.notifier.watchdog()
                    next_watchdog = now + self.notifier.watchdog_interval
                if now >= next_status:
                    self.publisher.spool.retry_writes()  # a spool that could not be written
                    self.publisher.spool.expire()
                    self.notifier.status(self.status_line())
                    next_status = now + STATUS_INTERVAL_SECONDS
                if now >= next_stats:
                    self.publish_stats()
                    next_stats = now + self.config.mqtt.stats_interval_seconds
                if self._reload_requested.is_set():
                    self._reload_requested.clear()
                    self.reload()
        finally:
            self.shutdown()
        return 0

    def publish_stats(self) -> None:
        figures = self.loop.collector.snapshot()
        figures.update(
            {
                "camera": camera_summary(self.source.status),
                "reconnects": self.publisher.transport.reconnects,
                "queued": len(self.publisher.spool),
                "dropped": self.publisher.dropped,
                "spool_dropped": self.publisher.spool.dropped,
                "spool_unsaved": self.publisher.spool.unsaved,
                "broker_connected": self.publisher.transport.connected,
            }
        )
        self.publisher.publish(
            stats_message(figures, self.loop.topics, self.config.device_id, time.time(), __version__)
        )

    def shutdown(self) -> None:
        started = time.monotonic()
        self.notifier.stopping()
        self.loop.finish()  # end events go to the spool first: not lost if the broker is away
        self.source.stop(timeout=1.0)
        if self.source.finished and not self.stop_event.is_set():
            # A recording processed to its end: give the summaries a moment to reach the
            # broker (what does not stays in the spool for the next run).
            deadline = time.monotonic() + RECORDING_DRAIN_SECONDS
            while (len(self.publisher.spool) or self.publisher.spool.unsaved) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.publisher.stop(timeout=2.5)
        _LOGGER.info(
            "stopped in %.2f s (%d frames, %d events; %d visit summaries still spooled)",
            time.monotonic() - started,
            self.loop.stats.frames,
            self.loop.stats.events,
            len(self.publisher.spool),
        )

    def reload(self) -> None:
        """SIGHUP: read the config again and restart only the parts whose settings changed."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            for warning in self.parts.check(new):
                _LOGGER.warning("%s", warning)
        except ConfigError as err:
            _LOGGER.error("reload refused, keeping the running configuration: %s", err)
            self.notifier.ready(self.status_line())
            return
        changed = [
            f.name for f in dataclasses.fields(Config) if getattr(new, f.name) != getattr(self.config, f.name)
        ]
        if not changed:
            _LOGGER.info("reload: configuration unchanged")
            self.notifier.ready(self.status_line())
            return
        pipeline, publisher = self.pipeline, None
        try:
            if {"detector", "model", "tracking"} & set(changed):
                pipeline = self.parts.pipeline(new)
            check_alert_emotions(new, pipeline.classifier.labels, Path(pipeline.classifier.model_path).name)
            # A model with other labels: the tracker, the alert rules and Home Assistant's
            # entities (built from the labels) are made anew for it.
            labels_changed = pipeline.classifier.labels != self.pipeline.classifier.labels
            if labels_changed or {"mqtt", "homeassistant", "spool"} & set(changed):
                # built (files read, spool opened) before anything running is touched
                same_spool = str(spool_dir(new)) == str(spool_dir(self.config))
                publisher = self.parts.publisher(
                    new,
                    pipeline.classifier.labels,
                    self.current_state,
                    spool=self.publisher.spool if same_spool else None,
                )
        except (ContractError, DetectorError, ConfigError) as err:
            _LOGGER.error("reload refused, keeping the running configuration: %s", err)
            self.notifier.ready(self.status_line())
            return
        self.config, self.pipeline = new, pipeline
        logging.getLogger().setLevel(self.log_level or new.log_level)
        if labels_changed or {"tracking", "mqtt", "homeassistant", "spool", "rules", "camera"} & set(changed):
            # visits end under the old settings, so their summaries reach the old topics
            self.loop.end_visits("reload")
            self.tracker = FaceTracker(new.tracking, pipeline.classifier.labels)
            alerts = None
        else:
            alerts = self.loop.alerts  # open alerts carry over to the new loop
        if publisher is not None:
            self.publisher.stop(timeout=2.0)
            self.publisher = publisher
            self.publisher.start()
        if "camera" in changed:
            self.source.stop(timeout=1.0)
            self.source = self.parts.source(new.camera).start()
        self.loop = self._make_loop(alerts, previous=self.loop)
        _LOGGER.info("reloaded configuration: %s changed", ", ".join(changed))
        self.notifier.ready(self.status_line())


def run(config: Config, config_path: str | None = None, log_level: str | None = None) -> int:
    service = Service(config, config_path, log_level=log_level)
    if threading.current_thread() is threading.main_thread():
        service.install_signal_handlers()
    return service.run()
