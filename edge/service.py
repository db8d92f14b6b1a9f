"""``fer-kiosk run``: assembles the real parts from the config and runs the loop."""

from __future__ import annotations

import logging
import signal
import threading
import time

from edge import DEFAULT_MODEL, __version__
from edge.capture import FrameSource
from edge.classifier import EmotionClassifier
from edge.config import Config
from edge.daemon import ProcessingLoop
from edge.detect import HaarFaceDetector
from edge.mqtt import MqttPublisher
from edge.pipeline import FramePipeline
from edge.tracking import FaceTracker

_LOGGER = logging.getLogger(__name__)


def build_pipeline(config: Config) -> FramePipeline:
    """Model and detector; raises ContractError / DetectorError with a message naming the problem."""
    model_path = config.model.path or str(DEFAULT_MODEL)
    classifier = EmotionClassifier(model_path, num_threads=config.model.num_threads)
    return FramePipeline(HaarFaceDetector(config.detector), classifier)


def run(config: Config, stop: threading.Event | None = None) -> int:
    started = time.monotonic()
    stop = stop or threading.Event()
    pipeline = build_pipeline(config)
    tracker = FaceTracker(config.tracking, pipeline.classifier.labels)
    publisher = MqttPublisher(config.mqtt, client_id=config.mqtt.client_id or f"fer-kiosk-{config.device_id}")
    source = FrameSource(config.camera)
    loop = ProcessingLoop(config, source, pipeline, tracker, publisher)

    def request_stop(signum, _frame) -> None:
        _LOGGER.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    _LOGGER.info("fer-kiosk %s: device %s, topics under %s/", __version__, config.device_id, config.base_topic)
    publisher.start()
    source.start()
    try:
        loop.run(stop)
    finally:
        loop.finish()
        source.stop()
        publisher.stop(timeout=2.0)
        _LOGGER.info("stopped after %.1f s (%d frames, %d events)", time.monotonic() - started,
                     loop.stats.frames, loop.stats.events)
    return 0
