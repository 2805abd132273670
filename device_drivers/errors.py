"""The errors of the injector driver: one base, mixed with builtins where it fits (style.md §6)."""

from __future__ import annotations


class DriverError(Exception):
    """Base of every error raised by ``device_drivers``."""


class DriverTimeoutError(DriverError, TimeoutError):
    """No (valid) reply arrived within the reply deadline, retries included."""


class LinkLostError(DriverError, ConnectionError):
    """The serial port is gone (``SerialException``/``EIO``) or cannot be opened."""


class CapabilityError(DriverError):
    """The device lacks what the call needs (e.g. a plain New Era pump cannot arm)."""


class StateError(DriverError):
    """The call is not allowed in the injector's current state; the state is unchanged."""


class NotStartedError(StateError):
    """``start()`` failed before ``RUN`` was sent (or the device refused it): nothing was
    delivered, the injection never began."""


class LimitError(DriverError, ValueError):
    """A value is outside the safety limits (rate, volume, syringe, pressure)."""


class ReplyMismatchError(DriverError):
    """A reply arrived that does not fit the pending request (address or shape)."""


class DeviceRefusedError(DriverError):
    """The device answered ``?``, ``?NA``, ``?IGN`` or ``?COM``, or an alarm: not executed."""
