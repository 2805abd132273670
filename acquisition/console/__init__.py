"""The web console: the exam, the injector and the doses on one page, behind logins.

:class:`ConsoleBackend` is the view and the commands without HTTP; :class:`ConsoleServer`
serves it (loopback by default, HTTPS beyond), with the accounts' sessions and roles
(:mod:`.auth`), the live updates (:mod:`.events`) and the physicist's queries
(:mod:`.dose_desk`) (docs/console.md).
"""

from acquisition.console.backend import ConsoleBackend
from acquisition.console.server import ConsoleServer

__all__ = ["ConsoleBackend", "ConsoleServer"]
