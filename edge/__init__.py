"""The kiosk daemon: webcam -> grayscale -> Haar faces -> TFLite emotions -> MQTT events.

Light imports only (numpy, OpenCV, LiteRT, paho-mqtt, PyYAML): this package never imports
TensorFlow; training/ and converter/ import from here, never the other way round.
"""

from importlib import metadata, resources
from pathlib import Path

try:
    __version__ = metadata.version("fer-kiosk")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

# The model that ships with the project: package data of this package (edge/models/, see its
# README.md), so the same default works from a wheel, an editable install and the checkout.
DEFAULT_MODEL = Path(str(resources.files(__name__).joinpath("models", "emotion_int8.tflite")))
