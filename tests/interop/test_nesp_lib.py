"""nesp-lib 2.0.0, an independent New Era client, against our injector simulator over a real pty.

nesp-lib cannot arm (it knows no ``X`` command), so the simulator runs with ``require_arm=False``
(or ``plain=True``, which implies it). It acknowledges the power-up reset alarm itself: its first
command (``SAF``) is sent with "ignore one alarm". It does not handle Auto-Alarms, so only scenarios
without alarms are run. nesp-lib's serial port has no read timeout: each conversation runs in a
thread; if it hangs, closing the simulator makes the pty vanish and the blocked read fail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from device_drivers.codec import Prompt
from simulators.injector import InjectorSimulator

nesp_lib = pytest.importorskip("nesp_lib")

pytestmark = pytest.mark.interop

GUARD_S = 20.0


def guarded(sim: InjectorSimulator, conversation: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``conversation`` in a thread; on timeout close the simulator to unblock it, then fail."""
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.update(conversation())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="nesp-lib-conversation")
    thread.start()
    thread.join(GUARD_S)
    if thread.is_alive():
        sim.close()
        thread.join(5.0)
        pytest.fail(f"nesp-lib conversation hung for {GUARD_S} s")
    if errors:
        raise errors[0]
    return result


def inject_with_nesp_lib(url: str, safe_mode_timeout_s: int) -> dict[str, Any]:
    port = nesp_lib.Port(url)
    try:
        pump = nesp_lib.Pump(port, safe_mode_timeout_s=safe_mode_timeout_s)
        try:
            pump.syringe_diameter_mm = 4.699
            pump.pumping_direction = nesp_lib.PumpingDirection.INFUSE
            pump.pumping_volume_ml = 0.05
            pump.pumping_rate_ml_per_min = 0.5
            pump.volume_infused_clear()
            readback = {
                "model": pump.model_number,
                "firmware": pump.firmware_version,
                "upgrade": pump.firmware_upgrade,
                "diameter_mm": pump.syringe_diameter_mm,
                "volume_ml": pump.pumping_volume_ml,
                "rate_ml_min": pump.pumping_rate_ml_per_min,
                "direction": pump.pumping_direction,
            }
            pump.run(wait_while_running=True)  # polls status until the pump stops
            readback["infused_ml"] = pump.volume_infused_ml
            pump.pumping_volume_ml = 1.0
            pump.run(wait_while_running=False)
            readback["running"] = pump.running
            pump.stop(wait_while_running=True)
            readback["status_after_stop"] = pump.status
            return readback
        finally:
            if safe_mode_timeout_s:
                pump.safe_mode_timeout_s = 0  # joins nesp-lib's heartbeat thread
    finally:
        port.close()


@pytest.mark.parametrize(
    ("kwargs", "safe_mode_timeout_s", "upgrade"),
    [
        ({"require_arm": False}, 0, 1),
        ({"require_arm": False}, 5, 1),
        ({"plain": True}, 0, 0),
    ],
    ids=["extensions-basic", "extensions-safe", "plain-basic"],
)
def test_nesp_lib_injects(kwargs: dict[str, Any], safe_mode_timeout_s: int, upgrade: int) -> None:
    with InjectorSimulator(time_scale=60.0, **kwargs) as sim:
        url = sim.serve_pty()
        readback = guarded(sim, lambda: inject_with_nesp_lib(url, safe_mode_timeout_s))
        state = sim.snapshot()
    assert readback["model"] == 1000
    assert readback["firmware"] == (3, 928)
    assert readback["upgrade"] == upgrade  # "X1": our extension set
    assert readback["diameter_mm"] == pytest.approx(4.699)
    assert readback["volume_ml"] == pytest.approx(0.05)
    assert readback["rate_ml_min"] == pytest.approx(0.5)
    assert readback["direction"] is nesp_lib.PumpingDirection.INFUSE
    assert readback["infused_ml"] == pytest.approx(0.05)
    assert readback["running"] is True
    assert readback["status_after_stop"] is nesp_lib.Status.STOPPED
    assert state.run_count == 2
    assert state.prompt is Prompt.STOPPED
    assert state.safe_mode is False
    assert state.alarms_raised == ["R"]  # only the power-up alarm, acknowledged by nesp-lib
