"""End to end under failure: an agent killed mid-round, the server killed and restarted.

To make "mid-round" exact rather than a race, agents are frozen with SIGSTOP at
chosen points (a frozen agent can neither deliver nor time out on its own) and
resumed with SIGCONT; the agent that dies is killed with SIGKILL while frozen, so it
never delivered to the round it died in.
"""

import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e_support import WAIT, finished, wait_until
from fedguard.security.tls import certificate_paths
from fedguard.simulate import (
    Process,
    ServerHandle,
    SimulationSettings,
    launch_server,
    start_agent,
    start_server,
    wait_for_agents,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Every process a test starts; resumed and stopped at the end, whatever happens."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        if process.alive():
            os.kill(process.popen.pid, signal.SIGCONT)
        process.stop()


def round_status(server: ServerHandle, round_id: int) -> dict[str, Any] | None:
    with server.http() as http:
        response = http.get(f"/rounds/{round_id}")
    return dict(response.json()) if response.status_code == 200 else None


def delivered(server: ServerHandle, round_id: int, client_ids: set[str]) -> bool:
    status = round_status(server, round_id)
    return status is not None and set(status["client_ids"]) == client_ids


def client_id(settings: SimulationSettings, index: int) -> str | None:
    path = settings.out_dir / "agents" / f"cloud-{index}" / "credential.json"
    if not path.exists():
        return None
    return str(json.loads(path.read_text())["client_id"])


def freeze(process: Process) -> None:
    os.kill(process.popen.pid, signal.SIGSTOP)


def resume(process: Process) -> None:
    os.kill(process.popen.pid, signal.SIGCONT)


def start_three_with_one_late(
    server: ServerHandle, settings: SimulationSettings, processes: list[Process]
) -> tuple[list[Process], list[str]]:
    """Agents 0, 1, 2 where 2 is frozen after round 0, before it sees round 1.

    Agent 0 is frozen right after enrolling, which holds the setup round open while
    agents 1 and 2 deliver their statistics; then agent 2 is frozen (it is waiting
    for round 1) and agent 0 resumed, so round 1 opens with agent 2 unable to act.
    """
    out_dir = settings.out_dir
    first = start_agent(server, settings, 0, out_dir)
    processes.append(first)
    wait_until(lambda: client_id(settings, 0), "agent 0 to enroll")
    freeze(first)

    others = [start_agent(server, settings, index, out_dir) for index in (1, 2)]
    processes.extend(others)
    ids = [
        wait_until(lambda i=i: client_id(settings, i), "enrollment") for i in (0, 1, 2)
    ]
    wait_until(lambda: delivered(server, 0, {ids[1], ids[2]}), "round 0 statistics")
    freeze(others[1])
    resume(first)
    wait_until(lambda: delivered(server, 1, {ids[0], ids[1]}), "round 1 updates")
    return [first, *others], ids


def test_killed_agent_is_left_out_at_the_deadline_and_rejoins_after_restart(
    tmp_path: Path, key_file: Path, processes: list[Process]
) -> None:
    settings = SimulationSettings(
        clients=3,
        rounds=2,
        min_clients=2,
        round_deadline=8.0,
        out_dir=tmp_path / "run",
        key_file=key_file,
    )
    server = launch_server(settings)
    processes.append(server.process)
    agents, ids = start_three_with_one_late(server, settings, processes)

    # Agent 2 dies in the middle of round 1, having delivered nothing to it; the
    # others are frozen so that round 2 waits for the restarted agent.
    agents[2].popen.kill()
    agents[2].popen.wait()
    freeze(agents[0])
    freeze(agents[1])
    closed = wait_until(
        lambda: (s := round_status(server, 1)) and s["state"] == "closed" and s,
        "round 1 to close at its deadline",
    )
    assert closed["contributors"] == 2
    assert set(closed["client_ids"]) == {ids[0], ids[1]}
    assert closed["closed_at"] >= closed["deadline_at"]

    restarted = start_agent(server, settings, 2, settings.out_dir)
    processes.append(restarted)
    wait_until(lambda: delivered(server, 2, {ids[2]}), "the restarted agent")
    resume(agents[0])
    resume(agents[1])
    wait_until(lambda: finished(server), "the federation to finish")

    second = round_status(server, 2)
    assert second is not None and second["contributors"] == 3
    assert ids[2] in second["client_ids"]
    wait_for_agents([agents[0], agents[1], restarted])
    assert restarted.popen.returncode == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_restarted_server_keeps_accepted_updates_and_completes_the_round(
    tmp_path: Path, key_file: Path, processes: list[Process]
) -> None:
    settings = SimulationSettings(
        clients=3,
        rounds=1,
        min_clients=2,
        round_deadline=120.0,
        out_dir=tmp_path / "run",
        key_file=key_file,
        port=free_port(),
    )
    server = launch_server(settings)
    processes.append(server.process)
    agents, ids = start_three_with_one_late(server, settings, processes)

    server.process.popen.kill()
    server.process.stop()
    out_dir = settings.out_dir.resolve()
    restarted = start_server(
        out_dir / "server.toml",
        out_dir / "server",
        out_dir / "logs" / "server-restarted.log",
        ca_file=certificate_paths(out_dir / "certs").ca_cert,
    )
    processes.append(restarted.process)

    kept = round_status(restarted, 1)
    assert kept is not None and kept["state"] == "open"
    assert set(kept["client_ids"]) == {ids[0], ids[1]}

    resume(agents[2])
    wait_until(lambda: finished(restarted), "the federation to finish")
    completed = round_status(restarted, 1)
    assert completed is not None and completed["state"] == "closed"
    assert completed["contributors"] == 3
    with restarted.http() as http:
        assert http.get("/model/1").status_code == 200
    wait_for_agents(agents)
    assert [agent.popen.returncode for agent in agents] == [0, 0, 0]


def test_an_agent_stops_cleanly_on_sigterm(
    tmp_path: Path, key_file: Path, processes: list[Process]
) -> None:
    settings = SimulationSettings(
        clients=2, rounds=1, rows_per_cloud=500, out_dir=tmp_path / "run",
        key_file=key_file,
    )  # fmt: skip
    server = launch_server(settings)
    processes.append(server.process)
    agent = start_agent(server, settings, 0, settings.out_dir)
    processes.append(agent)
    # Alone, the agent waits for a second enrollment that never comes.
    wait_until(lambda: "joined federation" in agent.log_path.read_text(), "joining")

    agent.popen.send_signal(signal.SIGTERM)

    assert agent.popen.wait(timeout=WAIT) == 0
    assert "SIGTERM received; stopping" in agent.log_path.read_text()
