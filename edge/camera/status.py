"""What the daemon says about its camera: a value, apart from the capture code, so that
payloads and the tools that read them never import OpenCV."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CameraStatus:
    """What the daemon publishes about its camera (retained ``<prefix>/<device>/camera``)."""

    online: bool
    # "" when online; not_found | permission_denied | busy | unreachable | refused | no_frames | ended
    cause: str
    detail: str  # one line for people: the device and what to do
    since: float  # wall time of the change
