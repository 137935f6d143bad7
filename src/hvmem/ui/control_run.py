"""A controller of real guests followed on screen and written as results.

``hvmem qemu control`` and ``hvmem libvirt control`` differ in what they attach
to; from a built :class:`~hvmem.backends.qemu.control.ControlLoop` on they run
the same way, here: the Prometheus endpoint, SIGINT/SIGTERM/SIGHUP as the end
of the loop, the esxtop-style view (``LiveTop``) or, without a terminal, one
line per decision (every plan with ``--dry-run``), the results directory of the
run however it ends (``RunGuard``), and the events an operator must see.
"""

from __future__ import annotations

from typing import Any

import typer

from hvmem.errors import HvmemError
from hvmem.ui.exits import status_of_stop

__all__ = ["console", "follow_control", "kept_stop"]

#: Events printed when the run ends (and attach/restore lines when it starts).
SHOWN_EVENTS = ("attach_failed", "guest_dropped", "guest_stalled", "guest_resumed",
                "balloon_stuck", "balloon_no_gain", "swap_refused", "swap_failed",
                "ksm_refused", "ksm_unreachable", "restore_pending", "apply_failed")


def console():
    """The Rich console the controllers print on."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def follow_control(guard: Any, loop: Any, metrics: Any, *, title: str, interval_s: float,
                   duration_s: float | None, no_live: bool, metrics_port: int | None,
                   metrics_addr: str, what: str = "real guests") -> None:
    """Run ``loop`` until it ends, on screen, and write its results through ``guard``.

    Raises:
        HvmemError: the metrics endpoint cannot listen (the backend is closed first).
    """
    from hvmem.backends.qemu.control import plans_lines
    from hvmem.ui.top import LiveTop

    backend, dry_run = loop.backend, loop.dry_run
    if metrics is not None:
        try:
            metrics.serve(metrics_port, metrics_addr)
        except OSError as err:
            backend.close()
            raise HvmemError(f"--metrics-port: cannot listen on {metrics_addr}:{metrics_port} "
                             f"({err.strerror})") from None
    restore = loop.install_signal_handlers()
    out = console()
    printed = 0
    for event in backend.events:
        if event["event"] in ("attach_failed", "restored", "restore_failed",
                              "ksm_unreachable"):
            out.print(f"{event['event']} {event['vm']}: {event['detail']}", markup=False)

    def print_new_plans() -> None:
        nonlocal printed
        if dry_run:
            for t, plans in loop.port.plans[printed:]:
                for line in plans_lines(t, plans):
                    typer.echo(line)
            printed = len(loop.port.plans)

    def on_tick(lp: Any) -> None:
        view.update(lp.result.host_rows, lp.result.vm_rows)
        print_new_plans()
        if not live and not dry_run and lp.controller.last is not None and (
                lp.controller.steps > on_tick.steps):
            on_tick.steps = lp.controller.steps
            d = lp.controller.last
            for line in plans_lines(d.time_s, d.plans):
                typer.echo(line)

    on_tick.steps = 0
    live = out.is_terminal and not no_live
    try:
        if metrics is not None:
            out.print(f"metrics: http://{metrics_addr}:{metrics.port}/metrics", markup=False)
        with LiveTop(out, title, enabled=live, status=lambda host_row: (
                f"   {what}, {host_row['time_s']:.0f} s, decision every "
                f"{interval_s:g} s{_psi_status(host_row)}")) as view, guard.running():
            loop.run(duration_s, on_tick=on_tick)
    finally:
        restore()
        if metrics is not None:
            metrics.close()
    print_new_plans()
    result = loop.result
    # Without --duration a signal is how the run ends; with one, it cuts the run short.
    kept_stop(result, loop.stop_reason, cut_short=duration_s is not None)
    path = guard.write(result, backend.now_s())
    for event in result.events:
        if event["event"] in SHOWN_EVENTS and event["event"] != "ksm_unreachable":
            out.print(f"{event['time_s']:8.1f}s {event['event']} {event['vm']}: "
                      f"{event['detail']}", markup=False)
    out.print(f"{loop.stop_reason or 'stopped'}; guests left running; "
              f"results: {path}", markup=False)
    guard.finish()


def _psi_status(host_row: dict) -> str:
    """The host's memory pressure (PSI avg10) for the live view's status line."""
    some, full = host_row.get("psi_some_frac"), host_row.get("psi_full_frac")
    if some is None or some != some:  # absent, or NaN
        return ""
    return f", memory pressure some {some:.1%} full {full:.1%}"


def kept_stop(result, reason: str, *, cut_short: bool) -> None:
    """Mark a real run that a signal cut short incomplete; give an unfinished run its reason.

    The control loop counts any end with guests left as complete; a signal is
    the planned end of a controller without ``--duration``, but cuts a timed run
    short. (An error is marked when the results are written, ``RunGuard.write``.)
    """
    if cut_short and status_of_stop(reason) is not None:
        result.complete = False
    if not result.complete and not result.stop_reason:
        result.stop_reason = reason
