"""Configuration: every setting declared once, validated once, frozen.

Each setting is one dataclass field declared with :func:`setting` (its type comes from the
annotation, its default, help text and bounds from the call). Sections are frozen dataclasses;
:class:`Config` groups them. Values come from, in increasing precedence:

1. the defaults declared here,
2. a TOML file (``config/default.toml`` documents every setting),
3. the environment, ``GALACTO_<SECTION>_<NAME>`` (e.g. ``GALACTO_INJECTOR_URL``),
4. the command line (``--set section.name=value`` and the flags of each command).

A bad value raises :class:`ConfigError` naming the setting and where the value came from.
``docs/configuration.md`` lists every setting; ``tests/unit/test_settings.py`` keeps it complete.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.charset import python_encoding

from acquisition.laterality import DEFAULT_TERMS as DEFAULT_LATERALITY_TERMS
from acquisition.laterality import parse_terms

ENV_PREFIX = "GALACTO_"
#: How a value read from a configuration file names its origin (typed: no string coercion).
FILE_ORIGIN = "file"


class ConfigError(ValueError):
    """A setting has a bad value, an unknown name, or the file cannot be read."""


def setting(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: tuple[Any, ...] | None = None,
    secret: bool = False,
) -> Any:
    """Declare one setting: a dataclass field carrying its documentation and bounds."""
    meta = {"help": help, "minimum": minimum, "maximum": maximum, "choices": choices}
    meta["secret"] = secret
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


#: Longest AE title and short string (DICOM VRs AE and SH, PS3.5 6.2).
AE_MAX = 16
SH_MAX = 16


@dataclass(frozen=True)
class SiteSettings:
    name: str = setting(
        "galacto", "Human-readable name of this installation, shown on the console."
    )
    uid_root: str = setting(
        "1.2.826.0.1.3680043.10.1466",
        "Organisation UID root for the UIDs this controller generates (PS3.5 §9).",
    )
    pseudonym_secret: str = setting(
        "",
        "Per-site secret for HMAC-SHA256 pseudonyms of patient identifiers in exports "
        "(dose.md §6). Set it from the environment (GALACTO_SITE_PSEUDONYM_SECRET); "
        "never commit it.",
        secret=True,
    )
    journal_key: str = setting(
        "",
        "Per-site key of the journal's HMAC-SHA256 chain. Without it the chain is plain SHA-256:"
        " it still shows accidental damage, but not a forger who recomputes it. Set it from the"
        " environment (GALACTO_SITE_JOURNAL_KEY); never commit it. `galacto serve` refuses to"
        " start without it unless site.allow_unkeyed_journal is true. To rotate it, move the"
        " old key into site.journal_previous_keys and restart: the change is journaled under the"
        " old key (docs/journal.md).",
        secret=True,
    )
    journal_previous_keys: tuple[str, ...] = setting(
        (),
        "Earlier journal keys, newest first: a journal still sealed with one of them is rotated"
        " to site.journal_key at start-up, and `galacto journal verify` checks the entries"
        " written under each.",
        secret=True,
    )
    allow_unkeyed_journal: bool = setting(
        False,
        "Let `galacto serve` run without site.journal_key (a plain SHA-256 chain that anyone who"
        " can write the database can recompute): tests and trials only.",
    )
    journal_witness: str = setting(
        "",
        "Append-only file, in another folder than the database, where the journal's head (entry"
        " count, hash, time) is written at start-up, at every exam's close and at a clean stop,"
        " and copied to the system log: `galacto journal verify --witness FILE` then shows a"
        " database restored from an older copy. Empty: no witness (a warning at start-up).",
    )


@dataclass(frozen=True)
class DatabaseSettings:
    path: str = setting(
        "var/galacto.db",
        "SQLite database holding the worklist, MPPS, dose log, journal and outbox.",
    )
    busy_timeout_s: float = setting(
        5.0, "How long a writer waits for the database lock before failing.", minimum=0.1
    )
    min_free_mb: float = setting(
        500.0,
        "Free space (MiB) needed on the disks of database.path and dicom.storage_dir before an"
        " exam starts and before each injection; below it they are refused with the reason.",
        minimum=0,
    )


@dataclass(frozen=True)
class InjectorSettings:
    url: str = setting(
        "",
        "Serial URL of the contrast injector: a device (/dev/ttyUSB0), a pty path, "
        "socket://HOST:PORT or spy://... (pyserial serial_for_url).",
    )
    baud: int = setting(19200, "Line speed, 8N1.", choices=(300, 1200, 2400, 9600, 19200))
    address: int = setting(0, "Pump address on the line.", minimum=0, maximum=99)
    safe_timeout_s: int = setting(
        2,
        "Safe-mode watchdog (SAF n): the pump stops itself when the controller is silent this long."
        " The driver sends a heartbeat at least every half of it while armed or injecting.",
        minimum=1,
        maximum=255,
    )
    reply_timeout_s: float = setting(
        1.0, "Deadline for a whole reply to one command.", minimum=0.05, maximum=10.0
    )
    inter_byte_timeout_s: float = setting(
        0.5, "A gap longer than this inside a frame discards the partial frame.", minimum=0.01
    )
    syringe: str = setting("1ml", "Syringe size loaded in the injector.", choices=("1ml", "3ml"))
    rate_ml_min: float = setting(0.3, "Default injection rate.", minimum=0.001, maximum=1.0)
    volume_ml: float = setting(0.5, "Default volume of one injection.", minimum=0.01, maximum=3.0)
    max_rate_ml_min: float = setting(
        1.0, "Hard limit on the injection rate.", minimum=0.001, maximum=1.0
    )
    max_volume_per_injection_ml: float = setting(
        3.0, "Hard limit on the volume of one injection.", minimum=0.01, maximum=3.0
    )
    max_volume_per_exam_ml: float = setting(
        5.0, "Hard limit on the contrast volume of one exam.", minimum=0.01, maximum=5.0
    )
    max_injections_per_exam: int = setting(
        2, "Injections allowed in one exam.", minimum=1, maximum=2
    )
    min_volume_ml: float = setting(
        0.05,
        "Smallest volume of one injection. A smaller one is refused, never rounded: the wire "
        "carries 3 decimals of mL (0.0004 mL would go as VOL 0, which the pump takes as no "
        "limit at all), and at 0.05 mL the rounding is at most 1 %. May be raised, not lowered.",
        minimum=0.05,
        maximum=3.0,
    )
    min_rate_ml_min: float = setting(
        0.05,
        "Slowest injection rate, for the same reason (RAT goes in mL/min with 3 decimals). "
        "May be raised, not lowered.",
        minimum=0.05,
        maximum=1.0,
    )
    max_injection_s: float = setting(
        600.0,
        "Longest injection allowed (volume / rate, inclusive): 0.5 mL at the slowest rate. A "
        "longer one is refused; the controller also stops a run that takes 1.5 times what its "
        "volume needs (plus the baseline window, holds excluded).",
        minimum=1.0,
        maximum=3600.0,
    )
    pressure_warning_kpa: float = setting(
        70.0, "Warning limit, above the baseline pressure measured at injection start.", minimum=1
    )
    pressure_adjustment_kpa: float = setting(
        100.0,
        "Adaptive-flow limit above baseline: the injector reduces its rate above it.",
        minimum=1,
    )
    pressure_termination_kpa: float = setting(
        170.0, "Termination limit above baseline: the injection is stopped.", minimum=1
    )
    pressure_ceiling_kpa: float = setting(
        350.0, "Absolute pressure ceiling, whatever the baseline.", minimum=1, maximum=350.0
    )
    baseline_window_s: float = setting(
        2.0, "Seconds at injection start over which the baseline pressure is measured.", minimum=0
    )
    poll_interval_s: float = setting(
        0.2,
        "Status poll period while connected (never longer than safe_timeout_s / 2).",
        minimum=0.01,
    )
    extravasation_drop_kpa: float = setting(
        5.0,
        "A pressure fall this far below the run's peak while infusing at the set rate stops the"
        " injection as suspected extravasation.",
        minimum=1,
    )
    arm_timeout_s: float = setting(
        120.0, "An armed injector that is not started within this time disarms.", minimum=1
    )
    max_hold_s: float = setting(120.0, "A hold longer than this aborts the injection.", minimum=1)


@dataclass(frozen=True)
class DicomSettings:
    ae_title: str = setting(
        "GALACTO", "AE title of the controller's SCPs toward the unit.", maximum=AE_MAX
    )
    station_name: str = setting(
        "GALACTO",
        "Station Name (0008,1010) and Performed Station Name (0040,0242) in what the controller "
        "sends the RIS and the PACS (VR SH).",
        maximum=SH_MAX,
    )
    host: str = setting("127.0.0.1", "Address the SCPs listen on.")
    port: int = setting(
        11112,
        "Port the SCPs listen on (MWL, MPPS and Storage share it); 0 picks a free one.",
        minimum=0,
        maximum=65535,
    )
    allowed_calling_aes: tuple[str, ...] = setting(
        (),
        "Calling AE titles allowed to associate; empty allows any, which `galacto serve` accepts"
        " only on loopback or with dicom.allow_any_calling_ae (pacs.ae_title may always call"
        " back with Storage Commitment results).",
    )
    allow_any_calling_ae: bool = setting(
        False,
        "Accept any calling AE title with dicom.host not on loopback (an empty"
        " dicom.allowed_calling_aes); without it such a configuration refuses to start.",
    )
    max_associations: int = setting(
        32, "Associations the unit-facing SCPs accept at once, in all.", minimum=1, maximum=1000
    )
    max_associations_per_calling_ae: int = setting(
        8,
        "Associations one calling AE title may hold at once; the others are rejected (transient,"
        " local limit exceeded).",
        minimum=1,
        maximum=1000,
    )
    reserved_calling_aes: tuple[str, ...] = setting(
        (),
        "Calling AE titles for which max_associations_per_calling_ae slots are always kept free:"
        " other callers together use at most the rest. Empty: dicom.unit_ae_title.",
    )
    unit_ae_title: str = setting(
        "MG_SIM",
        "Scheduled Station AE Title of the worklist steps offered to the unit: the AE title "
        "the mammography unit queries the worklist with.",
        maximum=AE_MAX,
    )
    max_pdu: int = setting(
        262144, "Maximum PDU length advertised (bytes); 0 means unlimited.", minimum=0
    )
    connection_timeout_s: float = setting(5.0, "TCP connect timeout of every SCU.", minimum=0.1)
    acse_timeout_s: float = setting(10.0, "Association negotiation timeout.", minimum=0.1)
    dimse_timeout_s: float = setting(30.0, "Wait for a DIMSE message.", minimum=0.1)
    network_timeout_s: float = setting(
        30.0, "An association idle this long is dropped (and its slot freed).", minimum=0.1
    )
    worklist_max_results: int = setting(
        5000, "Cap on worklist items returned to one C-FIND (the unit's DIMSE timeout).", minimum=1
    )
    storage_dir: str = setting("var/objects", "Where received and generated objects are kept.")
    fsync_objects: bool = setting(
        True,
        "fsync each received object (and its directory) before acknowledging it: the unit may"
        " delete its copy once it has the C-STORE response.",
    )
    tls_certificate: str = setting("", "PEM certificate enabling TLS on SCPs and SCUs.")
    tls_private_key: str = setting("", "PEM private key for the TLS certificate.", secret=True)
    tls_ca: str = setting("", "PEM bundle of CAs whose peers are trusted (mutual TLS).")


@dataclass(frozen=True)
class RisSettings:
    host: str = setting("", "RIS worklist/MPPS host; empty disables the RIS (unscheduled exams).")
    port: int = setting(104, "RIS port.", minimum=1, maximum=65535)
    ae_title: str = setting("RIS", "Called AE title of the RIS.", maximum=AE_MAX)
    mpps_ae_title: str = setting(
        "", "Called AE of the RIS MPPS SCP (empty: same as ae_title).", maximum=AE_MAX
    )
    mpps_host: str = setting(
        "",
        "Host of the RIS MPPS SCP, when the MPPS manager is not the worklist provider "
        "(empty: same as host).",
    )
    mpps_port: int = setting(
        0, "Port of the RIS MPPS SCP (0: same as port).", minimum=0, maximum=65535
    )
    fallback_character_set: str = setting(
        "",
        "Specific Character Set assumed for a RIS worklist response that carries none, e.g. "
        '"ISO_IR 192" or "ISO_IR 100" (empty: the standard\'s default repertoire, ASCII).',
    )
    station_ae_title: str = setting(
        "GALACTO",
        "Scheduled Station AE Title the controller asks the RIS worklist for.",
        maximum=AE_MAX,
    )
    refresh_interval_s: float = setting(
        60.0, "How often the RIS worklist is polled into the local database.", minimum=1
    )
    laterality_terms: tuple[str, ...] = setting(
        DEFAULT_LATERALITY_TERMS,
        "Words that name the breast in an order (the worklist has no laterality key), each "
        "word=L or word=R, matched case-insensitively as whole words in the Requested "
        "Procedure Code meanings and Description, the Scheduled Protocol Code meanings and the "
        "SPS Description; a single letter only as a whole token. A side chosen at the console "
        "that disagrees with the order's is refused unless a reason to override is given.",
    )


@dataclass(frozen=True)
class PacsSettings:
    host: str = setting("", "PACS host; empty disables forwarding.")
    port: int = setting(104, "PACS port.", minimum=1, maximum=65535)
    ae_title: str = setting("PACS", "Called AE title of the PACS.", maximum=AE_MAX)
    storage_commitment: bool = setting(False, "Request Storage Commitment for sent objects.")
    commitment_port: int = setting(
        0,
        "Port on which the controller accepts the archive's N-EVENT-REPORT association "
        "(0: the main SCP port).",
        minimum=0,
        maximum=65535,
    )
    retry_initial_s: float = setting(2.0, "First retry delay of the outbox.", minimum=0.01)
    retry_max_s: float = setting(300.0, "Longest retry delay of the outbox.", minimum=0.01)
    mpps_hold_max_s: float = setting(
        600.0,
        "Longest time the exam's final MPPS waits for the PACS to store (and, with storage "
        "commitment, commit) the objects it lists; then it goes to the RIS anyway (journaled).",
        minimum=0,
    )
    stuck_alert_s: float = setting(
        900.0,
        "An outbound message still not delivered after this long raises an alert on the console "
        "and in the journal.",
        minimum=1,
    )


@dataclass(frozen=True)
class ConsoleSettings:
    host: str = setting("127.0.0.1", "Address of the technologists' web console.")
    port: int = setting(
        8080, "Port of the web console; 0 picks a free one.", minimum=0, maximum=65535
    )
    session_idle_s: float = setting(
        900.0,
        "A console session ends after this long without the user's activity (the live updates"
        " do not count); an expired session changes nothing, and logging in again resumes the"
        " open exam. STOP never needs a session.",
        minimum=10.0,
        maximum=86400.0,
    )
    allow_no_users: bool = setting(
        False,
        "Let `galacto serve` start with no console account, on loopback only (nobody can log"
        " in until `galacto users add` makes one; STOP works): trials and tests.",
    )
    tls_certificate: str = setting(
        "",
        "PEM certificate (with its chain) of the console's HTTPS; required, with"
        " console.tls_private_key, for any console.host but loopback. Separate from the DICOM"
        " TLS settings.",
    )
    tls_private_key: str = setting("", "PEM private key of console.tls_certificate.", secret=True)
    allowed_origins: tuple[str, ...] = setting(
        (),
        "Origins (https://name:port) the technologists' browsers use to reach the console,"
        " besides its bound address: a request from any other origin or Host is refused.",
    )


@dataclass(frozen=True)
class DoseSettings:
    cross_check_tolerance: float = setting(
        25.0,
        "Percent by which the unit's reported AGD may differ from galacto's independent Dance "
        "figure before the exposure is flagged 'disagrees' (a factor of about 10 or 100 is "
        "flagged 'unit suspected' whatever this is).",
        minimum=1.0,
        maximum=100.0,
    )
    hvl_tables: tuple[str, ...] = setting(
        (),
        "TOML files of the HVL each unit measured at its physics survey, by target/filter and "
        "kV (docs/dose.md: loading a unit's HVL table). Used when a unit reports no HVL.",
    )
    c_tables: tuple[str, ...] = setting(
        (),
        "TOML files of the glandularity correction c (Dance 2000: per glandularity, or the "
        "typical breast of ages 40-49 / 50-64). Without them c = 1 and the basis says so.",
    )
    reference_levels_file: str = setting(
        "",
        "TOML file of site reference levels, merged by id over the published defaults of "
        "config/reference-levels.toml (e.g. a level for magnified views, or per exam and "
        "breast). Empty: the defaults only.",
    )
    qa_patient_patterns: tuple[str, ...] = setting(
        ("*PHANTOM*", "QA*", "QC*", "*PHYSICS*"),
        "Patterns (* and ?, case-insensitive) of Patient ID or Patient's Name that mark a "
        "physics/QA exposure: flagged, and left out of patient totals and levels.",
    )
    qa_protocol_patterns: tuple[str, ...] = setting(
        ("*PHANTOM*", "*QC *", "QC", "*QUALITY CONTROL*", "*PHYSICS*", "*CALIBRATION*"),
        "Patterns of Protocol Name, Series/Study/Procedure Step Description or the RDSR's "
        "Acquisition Protocol that mark a physics/QA exposure.",
    )


@dataclass(frozen=True)
class LoggingSettings:
    level: str = setting(
        "INFO", "Log level of the diagnostic log.", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


@dataclass(frozen=True)
class Config:
    site: SiteSettings = field(default_factory=SiteSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    injector: InjectorSettings = field(default_factory=InjectorSettings)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    ris: RisSettings = field(default_factory=RisSettings)
    pacs: PacsSettings = field(default_factory=PacsSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    dose: DoseSettings = field(default_factory=DoseSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


@dataclass(frozen=True)
class SettingInfo:
    """What the docs and the loader know of one setting."""

    section: str
    name: str
    type: Any
    default: Any
    help: str
    minimum: float | None
    maximum: float | None
    choices: tuple[Any, ...] | None
    secret: bool

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.name.upper()}"


def iter_settings() -> Iterator[SettingInfo]:
    """Every declared setting, in declaration order."""
    for section_field in dataclasses.fields(Config):
        section_cls = _section_class(section_field.name)
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            default: Any = f.default
            if default is dataclasses.MISSING:
                default = f.default_factory()  # type: ignore[operator]
            yield SettingInfo(
                section=section_field.name,
                name=f.name,
                type=hints[f.name],
                default=default,
                help=f.metadata["help"],
                minimum=f.metadata["minimum"],
                maximum=f.metadata["maximum"],
                choices=f.metadata["choices"],
                secret=f.metadata["secret"],
            )


def _section_class(section: str) -> type:
    hints = typing.get_type_hints(Config)
    cls = hints[section]
    assert isinstance(cls, type)
    return cls


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the effective configuration: defaults < file < environment < overrides.

    ``overrides`` maps ``section.name`` to a value (from the command line: strings are parsed
    like environment values).
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}
    if path is not None:
        for key, value in _read_toml(Path(path)).items():
            raw[key] = (value, f"{FILE_ORIGIN} {path}")
    known = {info.env: info.key for info in iter_settings()}
    for env_name, value in environ.items():
        if env_name.startswith(ENV_PREFIX) and env_name in known:
            raw[known[env_name]] = (value, f"environment {env_name}")
    for key, value in (overrides or {}).items():
        raw[key] = (value, "command line")

    infos = {info.key: info for info in iter_settings()}
    for key, (_, origin) in raw.items():
        if key not in infos:
            raise ConfigError(f"{key}: unknown setting (from {origin})")

    sections: dict[str, Any] = {}
    for section_field in dataclasses.fields(Config):
        values: dict[str, Any] = {}
        for info in (i for i in infos.values() if i.section == section_field.name):
            if info.key in raw:
                value, origin = raw[info.key]
                values[info.name] = _coerce(info, value, origin)
        sections[section_field.name] = _section_class(section_field.name)(**values)
    config = Config(**sections)
    _check_cross_field(config)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
        doc = tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02X} on line {line}); "
            "save the file as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    flat: dict[str, Any] = {}
    for section, body in doc.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{section}: expected a [{section}] table in {path}")
        for name, value in body.items():
            flat[f"{section}.{name}"] = value
    return flat


def _coerce(info: SettingInfo, value: Any, origin: str) -> Any:
    def fail(why: str) -> ConfigError:
        shown = "***" if info.secret else repr(value)
        return ConfigError(f"{info.key}: {why}, got {shown} (from {origin})")

    kind = info.type
    is_tuple = typing.get_origin(kind) is tuple or kind is tuple
    # Text is parsed only where everything is text (environment, command line): in a TOML file
    # a value has a type, and "yes" for a boolean or "MG_SIM" for a list is a mistake.
    typed = origin.startswith(FILE_ORIGIN)
    if typed and isinstance(value, str) and kind is not str:
        raise fail(f"expected {_type_name(kind)} (TOML {_toml_example(kind)}), not a string")
    try:
        if is_tuple:
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, list | tuple):
                if typed and not all(isinstance(v, str) for v in value):
                    raise fail("expected a list of strings")
                items = [str(v) for v in value]
            else:
                raise fail("expected a list of strings")
            result: Any = tuple(items)
        elif kind is bool:
            if typed and not isinstance(value, bool):
                raise fail("expected true or false")
            result = _to_bool(value)
        elif kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise fail("expected an integer")
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise fail("expected a number")
            result = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise fail("expected a string")
            result = value
        else:  # pragma: no cover - a declaration error, caught by the tests
            raise fail(f"unsupported setting type {kind}")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise fail(f"expected {_type_name(kind)}") from exc
    if info.choices is not None and result not in info.choices:
        raise fail(f"expected one of {', '.join(map(str, info.choices))}")
    if isinstance(result, str):  # for text, the maximum is a length (a DICOM VR's)
        if info.maximum is not None and len(result) > info.maximum:
            raise fail(f"must be at most {info.maximum:g} characters")
        return result
    if info.minimum is not None and result < info.minimum:
        raise fail(f"must be at least {info.minimum}")
    if info.maximum is not None and result > info.maximum:
        raise fail(f"must be at most {info.maximum}")
    return result


def _toml_example(kind: Any) -> str:
    if typing.get_origin(kind) is tuple or kind is tuple:
        return '["A", "B"]'
    return {bool: "true", int: "104", float: "2.5"}.get(kind, '"text"')


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(value)


def _type_name(kind: Any) -> str:
    if isinstance(kind, types.GenericAlias) or typing.get_origin(kind) is tuple:
        return "a list of strings"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        kind, str(kind)
    )


def _check_cross_field(config: Config) -> None:
    inj = config.injector
    if not inj.pressure_warning_kpa < inj.pressure_adjustment_kpa < inj.pressure_termination_kpa:
        raise ConfigError(
            "injector.pressure_warning_kpa < injector.pressure_adjustment_kpa < "
            "injector.pressure_termination_kpa must hold, got "
            f"{inj.pressure_warning_kpa} / {inj.pressure_adjustment_kpa} / "
            f"{inj.pressure_termination_kpa}"
        )
    ordered = (
        ("min_rate_ml_min", "rate_ml_min"),
        ("rate_ml_min", "max_rate_ml_min"),
        ("min_volume_ml", "volume_ml"),
        ("volume_ml", "max_volume_per_injection_ml"),
    )
    for low, high in ordered:
        if getattr(inj, low) > getattr(inj, high):
            raise ConfigError(
                f"injector.{low}: must not exceed injector.{high} ({getattr(inj, high)}), "
                f"got {getattr(inj, low)}"
            )
    if inj.volume_ml / inj.rate_ml_min * 60.0 > inj.max_injection_s * (1 + 1e-9):
        raise ConfigError(
            f"injector.volume_ml / injector.rate_ml_min: the default injection takes longer "
            f"than injector.max_injection_s ({inj.max_injection_s} s)"
        )
    charset = config.ris.fallback_character_set
    if charset and charset not in python_encoding:
        raise ConfigError(
            f"ris.fallback_character_set: not a Specific Character Set term pydicom knows "
            f'(e.g. "ISO_IR 192", "ISO_IR 100"), got {charset!r}'
        )
    try:
        parse_terms(config.ris.laterality_terms)
    except ValueError as exc:
        raise ConfigError(f"ris.laterality_terms: {exc}") from exc
    if bool(config.dicom.tls_certificate) != bool(config.dicom.tls_private_key):
        raise ConfigError("dicom.tls_certificate and dicom.tls_private_key: set both or neither")
    if bool(config.console.tls_certificate) != bool(config.console.tls_private_key):
        raise ConfigError(
            "console.tls_certificate and console.tls_private_key: set both or neither"
        )
    d = config.dicom
    kept = d.max_associations_per_calling_ae * len(reserved_calling_aes(d))
    if kept >= d.max_associations:
        raise ConfigError(
            f"dicom.max_associations: must exceed the {kept} slots kept for "
            f"dicom.reserved_calling_aes ({d.max_associations_per_calling_ae} each), "
            f"got {d.max_associations}"
        )
    witness = config.site.journal_witness
    if witness and Path(witness).resolve().parent == Path(config.database.path).resolve().parent:
        raise ConfigError(
            "site.journal_witness: must be in another folder than database.path (a copy of the "
            f"database folder would carry the witness with it), got {witness!r}"
        )


def reserved_calling_aes(dicom: DicomSettings) -> tuple[str, ...]:
    """The calling AE titles with slots kept (``dicom.reserved_calling_aes``, or the unit's)."""
    return dicom.reserved_calling_aes or (dicom.unit_ae_title,)


def parse_override(text: str) -> tuple[str, str]:
    """Parse one ``--set section.name=value`` argument."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"--set expects section.name=value, got {text!r}")
    return key.strip(), value


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration as a flat dict, secrets replaced, for the start-up log."""
    out: dict[str, Any] = {}
    for info in iter_settings():
        value = getattr(getattr(config, info.section), info.name)
        out[info.key] = "***" if (info.secret and value) else value
    return out
