"""galacto acquisition: the exam, its configuration, journal, dose log and command line."""

import logging

from acquisition.settings import Config, ConfigError, load

__all__ = ["Config", "ConfigError", "load"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
