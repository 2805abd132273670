"""Device drivers: the contrast injector (pure codec, serial link, driver)."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__: list[str] = []
