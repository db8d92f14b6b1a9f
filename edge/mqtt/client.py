"""The login to the broker: the credentials and TLS files of the ``mqtt`` section, read and
checked here, for the daemon's connection (edge.mqtt.transport, with edge.mqtt.delivery over it) and
for the tools that watch the kiosks (``watch``, ``unregister``, the dashboard: ``log_in``).

- Credentials never appear in logs or in the config file.
- A file that cannot be used is a CredentialsError naming its key and what is wrong.
"""

from __future__ import annotations

import codecs
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.config import RECONNECT_MIN_SECONDS, MqttConfig, TlsConfig


class CredentialsError(Exception):
    """A credentials or TLS file the daemon cannot use; the message names the file (and the
    config key) and what is wrong, in one line, without any secret."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str | None
    source: str  # where they came from, for the log (never the values)

    def __repr__(self) -> str:  # keeps the password out of any accidental log line
        password = "<set>" if self.password else None
        return f"Credentials(username=<set>, password={password}, source={self.source!r})"


def _read_credentials_file(path: Path, label: str) -> dict[str, str]:
    """``username`` and ``password`` from a ``key=value`` file. Every defect is a
    CredentialsError naming ``label`` (the config key), the file and the line; a message
    never quotes the file's content, which holds the password."""
    where = f"{label}: {path}"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(65_537)
    except OSError as err:
        raise CredentialsError(f"{where}: cannot read ({err.strerror})") from None
    if len(raw) > 65_536:
        raise CredentialsError(f"{where}: larger than 64 KB; expected lines username=... and password=...")
    if raw.startswith(codecs.BOM_UTF8):
        raise CredentialsError(
            f"{where}: starts with a UTF-8 byte-order mark (BOM), which would become part "
            "of the first line; save it without one"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CredentialsError(
            f"{where} line {line}: not UTF-8 (Latin-1 or another encoding?); save the file as UTF-8"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("username", "password"):
            raise CredentialsError(f"{where} line {number}: expected username=... or password=...")
        if key in values:
            raise CredentialsError(f"{where} line {number}: {key} is given a second time")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise CredentialsError(f"{where} line {number}: the {key} contains a control character")
        values[key] = value
    return values


def _credential_files(config: MqttConfig, environ: Mapping[str, str]) -> list[tuple[Path, str]]:
    candidates = []
    if config.credentials_file:
        candidates.append((Path(config.credentials_file), "mqtt.credentials_file"))
    if environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append((Path(environ["CREDENTIALS_DIRECTORY"]) / "mqtt", "systemd credential mqtt"))
    return candidates


def credentials_warnings(config: MqttConfig, environ: Mapping[str, str] = os.environ) -> list[str]:
    """A credentials file that others may read is used, with this warning."""
    warnings = []
    for path, label in _credential_files(config, environ):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and mode & 0o077:
            warnings.append(
                f"{label}: {path} has mode {stat.S_IMODE(mode):04o}: the password is readable by "
                f"{'everyone' if mode & 0o004 else 'its group'}; chmod 600 it"
            )
    return warnings


def resolve_credentials(config: MqttConfig, environ: Mapping[str, str] = os.environ) -> Credentials | None:
    """Username and password from, in order: environment, credentials file, systemd credential."""
    if environ.get("FER_KIOSK_MQTT_PASSWORD") or environ.get("FER_KIOSK_MQTT_USERNAME"):
        return Credentials(
            environ.get("FER_KIOSK_MQTT_USERNAME", config.username),
            environ.get("FER_KIOSK_MQTT_PASSWORD") or None,
            "environment",
        )
    for path, label in _credential_files(config, environ):
        if path.is_file() or label == "mqtt.credentials_file":
            values = _read_credentials_file(path, label)
            if values.get("username") or values.get("password") or config.username:
                return Credentials(
                    values.get("username", config.username), values.get("password") or None, str(path)
                )
    if config.username:
        return Credentials(config.username, None, "config (no password)")
    return None


class _PassphraseNeeded(Exception):
    pass


def log_in(client: mqtt.Client, config: MqttConfig) -> None:
    """Sets ``config``'s login on a paho client of a tool that watches the kiosks (``watch``,
    ``unregister``, the dashboard): credentials and TLS, as the daemon's. A file it cannot
    use raises CredentialsError."""
    credentials = resolve_credentials(config)
    if credentials is not None:
        client.username_pw_set(credentials.username, credentials.password)
    if config.tls.enabled:
        client.tls_set_context(tls_context(config.tls))
        client.tls_insecure_set(config.tls.insecure)


def reconnect_delays(config: MqttConfig) -> tuple[int, int]:
    """paho's own reconnect delays (least, most; whole seconds) for those tools."""
    least = int(RECONNECT_MIN_SECONDS)
    return least, max(least, int(config.reconnect_max_seconds))


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal, which a service has not got.
    raise _PassphraseNeeded()


def _ssl_reason(err: ssl.SSLError) -> str:
    return err.reason or (err.strerror if isinstance(err.strerror, str) else None) or str(err)


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The client's TLS context from ``mqtt.tls``: every file is read and parsed here, at
    start, and a file that cannot be used raises CredentialsError naming its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and host-name checks
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        if path:
            try:
                with open(path, "rb") as handle:
                    handle.read(1)
            except OSError as err:
                raise CredentialsError(f"mqtt.tls.{key}: {path}: cannot read ({err.strerror})") from None
    if tls.ca_file:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as err:
            raise CredentialsError(
                f"mqtt.tls.ca_file: {tls.ca_file}: no PEM certificate in it ({_ssl_reason(err)})"
            ) from None
    else:
        context.load_default_certs()
    if tls.cert_file:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=tls.cert_file)
        except (ssl.SSLError, ValueError) as err:
            raise CredentialsError(
                f"mqtt.tls.cert_file: {tls.cert_file}: no PEM certificate in it ({_ssl_reason(err)})"
            ) from None
        key_label = (
            f"mqtt.tls.key_file: {tls.key_file}" if tls.key_file else f"mqtt.tls.cert_file: {tls.cert_file}"
        )
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file or None, password=_no_passphrase)
        except _PassphraseNeeded:
            raise CredentialsError(
                f"{key_label}: the private key is encrypted and a service cannot type its "
                "pass phrase; use an unencrypted key readable only by the service"
            ) from None
        except ssl.SSLError as err:
            reason = _ssl_reason(err)
            what = (
                "the private key does not belong to the certificate"
                if "MISMATCH" in reason.upper()
                else f"no PEM private key in it ({reason})"
            )
            raise CredentialsError(f"{key_label}: {what}") from None
    context.check_hostname = not tls.insecure
    return context
