"""The test broker lives in bench/harness.py (benchmarks use it too); kept importable from here."""

from bench.harness import Broker, free_port, mosquitto_binary  # noqa: F401
