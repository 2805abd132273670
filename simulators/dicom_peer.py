"""What the simulated DICOM peers share: one AE on one port, a life cycle and an outage switch.

A subclass says which SOP classes it supports (``_build_ae``) and which handlers serve them
(``_handlers``); this class starts and stops the server, keeps the bound address across an
outage (``down()`` aborts every association and stops listening; ``up()`` listens again on the
same port) and is a context manager.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Self

from pynetdicom import AE

from dicom_nodes.network import NODELAY_HANDLERS, Timeouts

log = logging.getLogger(__name__)


class SimulatedPeer:
    """Base of the simulated RIS and PACS (the unit is an SCU and does not listen)."""

    kind = "peer"

    def __init__(self, ae_title: str, timeouts: Timeouts) -> None:
        self.ae_title = ae_title
        self.timeouts = timeouts
        self._stopping = threading.Event()
        self._ae: AE | None = None
        self._server: Any = None
        self._address: tuple[str, int] | None = None

    # -- what a subclass provides ------------------------------------------------------------

    def _build_ae(self) -> AE:
        raise NotImplementedError

    def _handlers(self) -> list[Any]:
        raise NotImplementedError

    def _on_start(self) -> None:
        """Start the subclass's own workers (before the port opens)."""

    def _on_stop(self) -> None:
        """Stop the subclass's own workers (before the AE shuts down)."""

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start listening; returns the bound ``(host, port)``."""
        if self._ae is not None:
            raise RuntimeError(f"the simulated {self.kind} is already started")
        self._stopping.clear()
        self._ae = self._build_ae()
        self._on_start()
        try:
            self._listen(host, port)
        except OSError:
            self.stop()
            raise
        return self.address

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (a fault's delay) unless the peer stops first; True if it stopped."""
        return self._stopping.wait(seconds)

    def stop(self) -> None:
        """Stop listening and abort open associations (idempotent)."""
        self._stopping.set()
        self._on_stop()
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None
        self._server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` it listens on (kept across ``down()``/``up()``)."""
        if self._address is None:
            raise RuntimeError(f"the simulated {self.kind} is not started")
        return self._address

    def down(self) -> None:
        """Stop listening and abort open associations (the outage fault)."""
        if self._server is None:
            return
        for assoc in list(self._server.active_associations):
            assoc.abort()
        self._server.shutdown()
        self._server = None
        log.info("simulated %s %s is down", self.kind, self.ae_title)

    def up(self) -> None:
        """Listen again on the same port after ``down()``."""
        if self._server is not None:
            return
        host, port = self.address
        self._listen(host, port)
        log.info("simulated %s %s is up again on port %d", self.kind, self.ae_title, port)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def _listen(self, host: str, port: int) -> None:
        assert self._ae is not None
        handlers = [*self._handlers(), *NODELAY_HANDLERS]
        self._server = self._ae.start_server((host, port), block=False, evt_handlers=handlers)
        bound_host, bound_port = self._server.server_address[:2]
        self._address = (str(bound_host), int(bound_port))
