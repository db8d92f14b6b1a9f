"""The counter's live dashboard: a small web server that subscribes to the kiosks' MQTT
topics (read-only) and streams every device's tile to browsers with Server-Sent Events.

A process of its own, beside (never inside) the daemon: ``fer-kiosk dashboard``. It reuses
edge's topic layout, payloads and config rules; the daemon never imports this package.
Standard library plus paho-mqtt: nothing to install beyond the base install.
"""
