"""Device drivers: the contrast injector (pure codec, serial link, driver).

``NewEraInjector(url, limits=InjectorLimits(...), timing=LinkTiming(...))`` is the driver behind
the abstract :class:`InjectorABC`; the URL decides what is on the other end (a device, a pty,
``socket://``, ``spy://``). See ``docs/injector-protocol.md``.
"""

import logging

from device_drivers.base import (
    InjectionResult,
    InjectionStatus,
    InjectorABC,
    InjectorState,
    Progress,
    RecordedEvent,
)
from device_drivers.driver import NewEraInjector
from device_drivers.errors import DriverError
from device_drivers.limits import InjectorLimits
from device_drivers.link import LinkTiming

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DriverError",
    "InjectionResult",
    "InjectionStatus",
    "InjectorABC",
    "InjectorLimits",
    "InjectorState",
    "LinkTiming",
    "NewEraInjector",
    "Progress",
    "RecordedEvent",
]
