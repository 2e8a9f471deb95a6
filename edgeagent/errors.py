"""Typed exceptions and the process exit codes they map to (only ``cli.py`` exits)."""

from __future__ import annotations

# Exit codes (documented in the README and used by the systemd unit's RestartPreventExitStatus=).
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_MODEL = 66  # EX_NOINPUT: the model is missing, unreadable or cannot be compiled
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: an endpoint could not be bound/connected
EXIT_CONFIG = 78  # EX_CONFIG: a bad config file, key or value


class EdgeAgentError(Exception):
    """Base class of every error edgeagent raises on purpose."""

    exit_code = EXIT_CRASH


class ConfigError(EdgeAgentError):
    """A configuration file, key or value is wrong; the message names which and what was expected."""

    exit_code = EXIT_CONFIG


class InvalidSetting(ValueError):
    """A setting's value is out of bounds. Raised by the config dataclasses' and the policy's own
    checks; :func:`edgeagent.config.load` turns it into a :class:`ConfigError` naming the file and the
    section. One type, so a check never has to pack its key, value and expectation into a tuple."""

    def __init__(self, key: str, value: object, expected: str, owner: str = "") -> None:
        super().__init__(f"{owner + '.' if owner else ''}{key} = {value!r}: expected {expected}")
        self.key = key
        self.value = value
        self.expected = expected


class ModelError(EdgeAgentError):
    """The model cannot be read, pre-processed or compiled."""

    exit_code = EXIT_MODEL


class EndpointError(EdgeAgentError):
    """A ZeroMQ endpoint or the metrics address cannot be bound or connected."""

    exit_code = EXIT_UNAVAILABLE


class BadFrame(Exception):
    """A received message is not an acceptable frame.

    ``reason`` is one of :data:`edgeagent.wire.REJECT_REASONS` (a fixed set, used as a metric label);
    ``detail`` is a human sentence for the log and the error reply.
    """

    def __init__(self, reason: str, detail: str, source: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.source = source
