"""The daemon: the processing loop, the service that builds and reloads its parts, systemd, stats."""
