"""The kiosk daemon: webcam -> grayscale -> Haar faces -> TFLite emotions -> MQTT events.

Light imports only (numpy, OpenCV, LiteRT, paho-mqtt, PyYAML): this package never imports
TensorFlow; training/ and converter/ import from here, never the other way round.
"""

from pathlib import Path

__version__ = "0.1.0"

# The model that ships with the project (see models/README.md).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "emotion_int8.tflite"
