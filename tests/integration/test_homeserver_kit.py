"""Integration tests of the homeserver kit against real Synapse processes.

The Matrix calls here are raw httpx on purpose: the kit stands alone, so its tests do not use the
nimbus client. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from nimbus.homeserver import (
    AlreadyRunning,
    Homeserver,
    Lab,
    RegisteredUser,
    ServerSpec,
    StartFailed,
)
from nimbus.homeserver.postgres import find_bin_dir
from nimbus.homeserver.process import pid_alive

pytestmark = pytest.mark.integration

JSON = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------------------
def api(server: Homeserver, user: RegisteredUser | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {user.access_token}"} if user else {}
    return httpx.Client(base_url=server.client_url, headers=headers, trust_env=False, timeout=30)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Syncer:
    """Incremental /sync for one user (spec: Client-Server API, GET /_matrix/client/v3/sync)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.since: str | None = None

    def until(self, pred: Callable[[JSON], bool], timeout: float = 30.0) -> JSON:
        deadline = time.monotonic() + timeout
        while True:
            params = {"timeout": "1000", **({"since": self.since} if self.since else {})}
            r = self.client.get("/_matrix/client/v3/sync", params=params)
            assert r.status_code == 200, r.text
            body: JSON = r.json()
            self.since = body["next_batch"]
            if pred(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"/sync did not deliver the expected update within {timeout} s")


def invited_to(room_id: str) -> Callable[[JSON], bool]:
    return lambda body: room_id in body.get("rooms", {}).get("invite", {})


def message_in(room_id: str, text: str) -> Callable[[JSON], bool]:
    def pred(body: JSON) -> bool:
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        events = room.get("timeline", {}).get("events", [])
        return any(e.get("type") == "m.room.message" and e["content"].get("body") == text for e in events)

    return pred


def create_room(c: httpx.Client, invite: list[str] | None = None) -> str:
    r = c.post("/_matrix/client/v3/createRoom", json={"invite": invite or []})
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def send_text(c: httpx.Client, room_id: str, text: str) -> str:
    txn = f"t{time.monotonic_ns()}"
    r = c.put(f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{txn}",
              json={"msgtype": "m.text", "body": text})  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def invite(c: httpx.Client, room_id: str, user_id: str) -> httpx.Response:
    return c.post(f"/_matrix/client/v3/rooms/{quote(room_id)}/invite", json={"user_id": user_id})


# --- fixtures and single servers -------------------------------------------------------------------------
NewUser = Callable[..., tuple[str, str]]


def test_fixture_server_and_new_user(homeserver: Homeserver, new_user: NewUser) -> None:
    user_id, password = new_user(homeserver, "Alice")
    assert user_id.startswith("@alice-") and user_id.endswith(":" + homeserver.server_name)
    other_id, other_password = new_user(homeserver, "alice")
    assert other_id != user_id and other_password != password
    with api(homeserver) as c:
        r = c.post("/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        })  # fmt: skip
        assert r.status_code == 200 and r.json()["user_id"] == user_id
        # the dev profile leaves registration open (spec: POST /_matrix/client/v3/register -> UIA)
        r = c.post("/_matrix/client/v3/register", json={"username": "x", "password": "y"})
        assert r.status_code == 401 and "flows" in r.json()


def test_start_status_stop_and_second_start(tmp_path: Path) -> None:
    hs = Homeserver.configure(tmp_path / "hs", env={"NIMBUS_KIT_TEST": "marker-42"})
    assert not hs.status().running
    hs.launch()
    try:
        st = hs.status()
        assert st.running and st.responding and st.pid == hs.pid
        assert hs.paths.pid_file.read_text().strip() == str(st.pid)
        assert b"NIMBUS_KIT_TEST=marker-42" in Path(f"/proc/{st.pid}/environ").read_bytes()
        t0 = time.monotonic()
        with pytest.raises(AlreadyRunning, match=f"already running from {hs.data_dir}") as e:
            Homeserver.open(hs.data_dir).launch()  # another handle on the same folder
        assert e.value.pid == st.pid and time.monotonic() - t0 < 5
        assert hs.status().running  # the failed second start left the first one alone
    finally:
        assert hs.stop()
    assert not hs.status().running and not hs.paths.pid_file.exists()
    assert not pid_alive(st.pid)
    assert hs.stop() is False  # stopping a stopped server is not an error


def test_sigkilled_server_is_not_running_and_starts_again(tmp_path: Path) -> None:
    hs = Homeserver.start(tmp_path / "hs")
    try:
        hs.create_user("before", "pw-before")
        pid = hs.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        other = Homeserver.open(hs.data_dir)  # a handle that is not the parent process
        wait_until(lambda: not other.status().running, 10, "the killed server to be seen as stopped")
        assert not hs.is_running
        hs.launch()
        assert hs.pid != pid and hs.status().responding
        with pytest.raises(Exception, match="M_USER_IN_USE"):
            hs.create_user("before", "pw-again")  # the database survived the kill
    finally:
        hs.stop()


def test_broken_config_fails_fast_quoting_the_log(tmp_path: Path) -> None:
    bad_db = tmp_path / "no" / "such" / "dir" / "homeserver.db"
    hs = Homeserver.configure(
        tmp_path / "hs", extra={"database": {"name": "sqlite3", "args": {"database": str(bad_db)}}}
    )
    t0 = time.monotonic()
    with pytest.raises(StartFailed) as e:
        hs.launch(timeout=60)
    assert time.monotonic() - t0 < 30
    message = str(e.value)
    assert "exited with code" in message and str(hs.data_dir) in message
    assert "unable to open database file" in e.value.log_tail
    assert not hs.is_running and not hs.paths.pid_file.exists()


def test_secure_profile_closes_registration_and_encrypts_by_default(tmp_path: Path) -> None:
    hs = Homeserver.start(tmp_path / "hs", profile="secure")
    try:
        rendered = yaml.safe_load(hs.paths.config.read_text())
        assert rendered["encryption_enabled_by_default_for_room_type"] == "all"
        assert rendered["enable_registration"] is False
        with api(hs) as c:
            body = {"username": "mallory", "password": "pw", "auth": {"type": "m.login.dummy"}}
            r = c.post("/_matrix/client/v3/register", json=body)
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
        admin = hs.create_user("owner", "correct horse battery staple", admin=True)
        with api(hs, admin) as c:
            room = create_room(c)
            r = c.get(f"/_matrix/client/v3/rooms/{quote(room)}/state/m.room.encryption/")
            assert r.status_code == 200 and r.json()["algorithm"] == "m.megolm.v1.aes-sha2"
    finally:
        hs.stop()


# --- federation ----------------------------------------------------------------------------------------
def test_lab_invite_join_and_message_over_federation(lab2: Lab) -> None:
    a_srv, b_srv = lab2.servers
    a, b = lab2.create_user(0, "fed-alice-1"), lab2.create_user(1, "fed-bob-1")
    with api(a_srv, a) as ca, api(b_srv, b) as cb:
        sync_b = Syncer(cb)
        sync_b.until(lambda _: True)  # initial sync: position before the invite
        room = create_room(ca, invite=[b.user_id])
        sync_b.until(invited_to(room))
        r = cb.post(f"/_matrix/client/v3/join/{quote(room)}")
        assert r.status_code == 200, r.text
        send_text(ca, room, "hello over federation")
        body = sync_b.until(message_in(room, "hello over federation"))
        events = body["rooms"]["join"][room]["timeline"]["events"]
        assert any(e.get("sender") == a.user_id for e in events)


def test_lab_server_outage_and_catch_up(lab2: Lab) -> None:
    a, b = lab2.create_user(0, "fed-alice-2"), lab2.create_user(1, "fed-bob-2")
    with api(lab2.servers[0], a) as ca, api(lab2.servers[1], b) as cb:
        room = create_room(ca, invite=[b.user_id])
        sync_b = Syncer(cb)
        sync_b.until(invited_to(room))
        assert cb.post(f"/_matrix/client/v3/join/{quote(room)}").status_code == 200
        lab2.stop_server(1)
        assert not lab2.servers[1].is_running
        send_text(ca, room, "sent while B was down")
        lab2.start_server(1)
        t0 = time.monotonic()
        sync_b.until(message_in(room, "sent while B was down"), timeout=30)
        assert time.monotonic() - t0 < 30
    state = json.loads((lab2.path / "lab.json").read_text())
    assert state["servers"][1]["pid"] == lab2.servers[1].pid


def test_closed_federation_refuses_servers_outside_the_allowed_set(tmp_path: Path) -> None:
    specs = [ServerSpec(allow=(0, 1)), ServerSpec(), ServerSpec()]
    with Lab.start(tmp_path / "lab", specs) as lab:
        a, b, c = (lab.create_user(i, f"user{i}") for i in range(3))
        with api(lab.servers[0], a) as ca, api(lab.servers[2], c) as cc:
            room = create_room(ca)
            assert invite(ca, room, b.user_id).status_code == 200  # B is in A's allowed set
            r = invite(ca, room, c.user_id)  # C is not: A refuses to contact it
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
            room_c = create_room(cc)
            r = invite(cc, room_c, a.user_id)  # C may try, but A refuses C's request
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text


def test_no_federation_server_refuses_remote_users(tmp_path: Path, lab2: Lab) -> None:
    with Lab.start(tmp_path / "lab", 1, no_federation=True) as lab:
        hs = lab.servers[0]
        assert hs.federation_port is None
        rendered = yaml.safe_load(hs.paths.config.read_text())
        assert rendered["federation_domain_whitelist"] == []
        assert [li["resources"][0]["names"] for li in rendered["listeners"]] == [["client"]]
        remote = lab2.create_user(0, "remote-target")
        alone = lab.create_user(0, "alone")
        with api(hs, alone) as c:
            room = create_room(c)
            r = invite(c, room, remote.user_id)
            assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text


# --- PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture
def postgres_server(tmp_path: Path) -> Iterator[Homeserver]:
    try:
        find_bin_dir()
    except Exception as e:
        pytest.skip(f"PostgreSQL is not installed: {e}")
    hs = Homeserver.configure(tmp_path / "hs", database="postgres")
    try:
        hs.launch()
        yield hs
    finally:
        hs.stop()
        pg = hs.postgres
        if pg is not None:
            pg.destroy()


def test_postgres_server_registers_and_sends(postgres_server: Homeserver) -> None:
    hs = postgres_server
    rendered = yaml.safe_load(hs.paths.config.read_text())
    assert rendered["database"]["name"] == "psycopg2"
    user = hs.create_user("pg-user", "pw")
    with api(hs, user) as c:
        room = create_room(c)
        event_id = send_text(c, room, "stored in postgres")
        r = c.get(f"/_matrix/client/v3/rooms/{quote(room)}/event/{quote(event_id)}")
        assert r.status_code == 200 and r.json()["content"]["body"] == "stored in postgres"
    assert hs.postgres is not None and hs.postgres.running_pid() is not None
    hs.stop()
    assert hs.postgres.running_pid() is None  # the server's own cluster stops with it


# --- CLI -------------------------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nimbus.homeserver.cli", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def json_lines(out: str) -> list[JSON]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_cli_lab_up_status_down(tmp_path: Path) -> None:
    lab_dir = tmp_path / "cli-lab"
    try:
        up = run_cli("lab", "up", "--servers", "2", "--dir", str(lab_dir), "--json")
        assert up.returncode == 0, up.stderr
        assert [s["running"] for s in json_lines(up.stdout)] == [True, True]
        status = run_cli("lab", "status", "--dir", str(lab_dir), "--json")
        assert status.returncode == 0, status.stderr
        servers = json_lines(status.stdout)
        assert len(servers) == 2 and all(s["running"] and s["responding"] for s in servers)
        user = run_cli("create-user", "carol", "--dir", servers[0]["data_dir"], "--json")
        assert user.returncode == 0, user.stderr
        assert json_lines(user.stdout)[0]["user_id"] == f"@carol:{servers[0]['server_name']}"
        assert "access_token" not in user.stdout
        again = run_cli("start", "--dir", servers[0]["data_dir"])
        assert again.returncode == 1 and "already running" in again.stderr
        down = run_cli("lab", "down", "--dir", str(lab_dir), "--json")
        assert down.returncode == 0, down.stderr
        after = json_lines(run_cli("lab", "status", "--dir", str(lab_dir), "--json").stdout)
        assert [s["running"] for s in after] == [False, False]
        assert not any(pid_alive(s["pid"]) for s in servers)
    finally:
        if (lab_dir / "lab.json").exists():
            Lab.open(lab_dir).stop()
