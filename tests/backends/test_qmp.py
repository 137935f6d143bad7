import time

import pytest

from hvmem.backends.qemu.qmp import QmpClient, QmpCommandError, QmpGone, QmpTimeout


def test_call_returns_qemu_answer(fake_host):
    fake_host.add_guest("g1", 4001)
    with QmpClient(fake_host.spec("g1").qmp, 1.0, name="g1") as qmp:
        assert qmp.call("query-balloon") == {"actual": 512 * (1 << 20)}
        assert qmp.call("query-memory-size-summary")["base-memory"] == 512 << 20
        assert qmp.calls == 2
    assert [c for c, _ in fake_host.guests["g1"].commands][:1] == ["qmp_capabilities"]


def test_error_answer_is_a_command_error(fake_host):
    fake_host.add_guest("g1", 4001)
    with QmpClient(fake_host.spec("g1").qmp, 1.0) as qmp, pytest.raises(
            QmpCommandError, match="unknown no-such-command"):
        qmp.call("no-such-command")


def test_silent_qemu_times_out_and_retries_once(fake_host):
    guest = fake_host.add_guest("g1", 4001)
    guest.hang = True
    qmp = QmpClient(fake_host.spec("g1").qmp, 0.3, name="g1")
    start = time.monotonic()
    with pytest.raises(QmpTimeout, match="g1: QMP query-balloon got no answer within 0.3 s"):
        qmp.call("query-balloon")
    elapsed = time.monotonic() - start
    assert qmp.timeouts == 2  # the first try and one retry on a fresh connection
    assert elapsed < 2.0
    guest.hang = False  # it recovers: the next call reconnects and works
    assert qmp.call("query-balloon")["actual"] == 512 << 20
    assert qmp.reconnects >= 1
    qmp.close()


def test_dead_guest_is_gone_not_a_hang(fake_host):
    fake_host.add_guest("g1", 4001)
    qmp = QmpClient(fake_host.spec("g1").qmp, 1.0, name="g1")
    qmp.call("query-balloon")
    fake_host.server("g1").kill()
    start = time.monotonic()
    with pytest.raises(QmpGone, match="g1"):
        qmp.call("query-balloon")
    assert time.monotonic() - start < 1.5
    with pytest.raises(QmpGone, match="does not exist"):
        qmp.call("query-balloon")
    qmp.close()


def test_socket_refusing_connections_is_gone(tmp_path):
    import socket

    path = tmp_path / "s"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the file stays, nothing listens: as after QEMU was killed
    with pytest.raises(QmpGone, match="cannot connect"):
        QmpClient(path, 0.5).call("query-status")


def test_bad_timeout_is_refused():
    from hvmem.errors import BackendError

    with pytest.raises(BackendError, match="positive"):
        QmpClient("/nonexistent", 0)


def test_events_are_not_kept(fake_host):
    fake_host.add_guest("g1", 4001)
    with QmpClient(fake_host.spec("g1").qmp, 1.0) as qmp:
        qmp.call("query-balloon")
        server = fake_host.server("g1")
        import asyncio
        import json

        async def emit():
            for w in server.writers:
                w.write(json.dumps({"event": "BALLOON_CHANGE", "data": {"actual": 1},
                                    "timestamp": {"seconds": 0, "microseconds": 0}}).encode()
                        + b"\n")
                await w.drain()

        asyncio.run_coroutine_threadsafe(emit(), server.loop).result(5)
        qmp.call("query-balloon")
        assert qmp._client.events.clear() == [] and qmp._client.events.history == ()
