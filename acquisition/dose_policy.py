"""The dose checks of this installation, built from the ``[dose]`` settings.

:func:`dose_policy` loads the physicist's HVL and c tables and the reference levels (the
published defaults of ``config/reference-levels.toml``, then the site's file over them) into
one :class:`dose.policy.DosePolicy`; :func:`qa_patterns` gives the physics/QA patterns. A table
or level file that cannot be used is a :class:`~acquisition.settings.ConfigError` naming the
setting, at start-up, never at the first exposure.
"""

from __future__ import annotations

from pathlib import Path

from acquisition.settings import Config, ConfigError
from dose.check import DanceTables
from dose.levels import LevelError, LevelSet, load_levels
from dose.plausibility import QaPatterns
from dose.policy import DosePolicy
from dose.tables import TableError, load_c_tables, load_hvl_table

#: The published reference levels galacto ships, with their sources (a site overrides them
#: with ``dose.reference_levels_file``).
DEFAULT_LEVELS = Path(__file__).resolve().parent.parent / "config" / "reference-levels.toml"


def reference_levels(config: Config) -> LevelSet:
    site = config.dose.reference_levels_file
    try:
        return load_levels([DEFAULT_LEVELS, *([site] if site else [])])
    except LevelError as exc:
        raise ConfigError(f"dose.reference_levels_file: {exc}") from exc


def dance_tables(config: Config) -> DanceTables:
    try:
        hvl = tuple(load_hvl_table(path) for path in config.dose.hvl_tables)
    except TableError as exc:
        raise ConfigError(f"dose.hvl_tables: {exc}") from exc
    try:
        c = load_c_tables(config.dose.c_tables)
    except TableError as exc:
        raise ConfigError(f"dose.c_tables: {exc}") from exc
    return DanceTables(hvl=hvl, c=c)


def dose_policy(config: Config) -> DosePolicy:
    """Every dose check of this configuration (module docstring)."""
    return DosePolicy(
        tables=dance_tables(config),
        tolerance_pct=config.dose.cross_check_tolerance,
        levels=reference_levels(config),
    )


def qa_patterns(config: Config) -> QaPatterns:
    return QaPatterns(
        patient=config.dose.qa_patient_patterns, protocol=config.dose.qa_protocol_patterns
    )
