"""Unit tests of the homeserver kit's config rendering, secrets and state records (no network)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimbus.homeserver import lab as lab_module
from nimbus.homeserver.config import (
    FAST_FEDERATION_RETRY,
    FederationTLS,
    HomeserverConfig,
    PostgresDatabase,
    Secrets,
    ServerPaths,
    config_from_record,
    config_to_record,
)
from nimbus.homeserver.errors import ConfigError
from nimbus.homeserver.lab import Lab, ServerSpec

# The rc_* keys the field notes list as needing relaxing in tests.
FIELD_NOTES_RC_KEYS = [
    "rc_message", "rc_registration", "rc_login", "rc_joins", "rc_joins_per_room", "rc_invites",
    "rc_key_requests", "rc_room_creation", "rc_federation", "rc_media_create", "rc_presence",
    "rc_delayed_event_mgmt", "rc_3pid_validation", "rc_admin_redaction", "rc_third_party_invite",
    "rc_registration_token_validity", "rc_reports", "rc_user_directory", "rc_profile",
]  # fmt: skip


def make(tmp_path: Path, profile: Any = "dev", **kw: Any) -> HomeserverConfig:
    return HomeserverConfig(
        server_name="localhost:8008", data_dir=tmp_path / "hs", client_port=8008, profile=profile, **kw
    )


def test_dev_profile_is_fast_and_unthrottled(tmp_path: Path) -> None:
    cfg = make(tmp_path).to_dict()
    assert cfg["bcrypt_rounds"] == 4
    db = str(tmp_path / "hs" / "homeserver.db")
    assert cfg["database"] == {"name": "sqlite3", "args": {"database": db}}
    for key in FIELD_NOTES_RC_KEYS:
        assert key in cfg, key
    assert cfg["rc_message"]["per_second"] >= 1000
    assert cfg["rc_login"]["failed_attempts"]["burst_count"] >= 1000
    assert cfg["rc_invites"]["per_issuer"]["per_second"] >= 1000
    assert cfg["rc_federation"]["reject_limit"] >= 1000


def test_secure_profile_is_closed_and_encrypted(tmp_path: Path) -> None:
    cfg = make(tmp_path, "secure").to_dict()
    assert cfg["enable_registration"] is False
    assert "enable_registration_without_verification" not in cfg
    assert cfg["encryption_enabled_by_default_for_room_type"] == "all"
    assert cfg["presence"] == {"enabled": False}
    assert cfg["report_stats"] is False
    assert "bcrypt_rounds" not in cfg  # Synapse's default cost
    assert not [k for k in cfg if k.startswith("rc_")]  # real (default) rate limits


@pytest.mark.parametrize("profile", ["dev", "secure"])
def test_both_profiles_bind_loopback_and_trust_no_key_server(tmp_path: Path, profile: str) -> None:
    cfg = make(tmp_path, profile).to_dict()
    assert cfg["trusted_key_servers"] == []
    assert cfg["suppress_key_server_warning"] is True
    assert cfg["report_stats"] is False
    assert [li["bind_addresses"] for li in cfg["listeners"]] == [["127.0.0.1"]]
    assert cfg["listeners"][0]["resources"][0]["names"] == ["client"]
    # secrets are referenced by path, never inline
    for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        assert name not in cfg
        assert cfg[f"{name}_path"] == str(tmp_path / "hs" / "keys" / name)
    assert cfg["signing_key_path"] == str(tmp_path / "hs" / "keys" / "signing.key")


def test_unknown_profile_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile"):
        make(tmp_path, "fast")


def test_federation_settings_render(tmp_path: Path) -> None:
    fed = FederationTLS(8448, tmp_path / "c.pem", tmp_path / "c.key", (tmp_path / "ca.pem",))
    cfg = make(
        tmp_path, federation=fed, federation_whitelist=("localhost:8448", "localhost:9448"),
        fast_federation_retry=True,
    ).to_dict()  # fmt: skip
    fed_listener = cfg["listeners"][1]
    assert fed_listener["port"] == 8448 and fed_listener["tls"] is True
    assert fed_listener["bind_addresses"] == ["127.0.0.1"]
    assert fed_listener["resources"] == [{"names": ["federation"], "compress": False}]
    assert cfg["tls_certificate_path"] == str(tmp_path / "c.pem")
    assert cfg["federation_custom_ca_list"] == [str(tmp_path / "ca.pem")]
    assert cfg["ip_range_whitelist"] == ["127.0.0.0/8", "::1/128"]
    assert cfg["federation_domain_whitelist"] == ["localhost:8448", "localhost:9448"]
    assert cfg["federation"] == FAST_FEDERATION_RETRY


def test_no_federation_whitelist_is_empty_list(tmp_path: Path) -> None:
    cfg = make(tmp_path, federation_whitelist=()).to_dict()
    assert cfg["federation_domain_whitelist"] == []
    assert len(cfg["listeners"]) == 1
    assert "federation_domain_whitelist" not in make(tmp_path).to_dict()


def test_postgres_database_renders_psycopg2(tmp_path: Path) -> None:
    cfg = make(tmp_path, database=PostgresDatabase("synapse", port=5433)).to_dict()
    assert cfg["database"]["name"] == "psycopg2"
    assert cfg["database"]["args"]["port"] == 5433
    assert cfg["database"]["args"]["database"] == "synapse"


def test_extra_overrides_top_level_keys(tmp_path: Path) -> None:
    cfg = make(tmp_path, extra={"presence": {"enabled": False}, "max_upload_size": "1M"}).to_dict()
    assert cfg["presence"] == {"enabled": False}
    assert cfg["max_upload_size"] == "1M"


def test_write_renders_yaml_that_loads_back(tmp_path: Path) -> None:
    cfg = make(tmp_path, "secure")
    path = cfg.write()
    assert yaml.safe_load(path.read_text()) == cfg.to_dict()
    log_cfg = yaml.safe_load(cfg.paths.log_config.read_text())
    assert log_cfg["handlers"]["file"]["filename"] == str(cfg.paths.log)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.paths.root.stat().st_mode) == 0o700


def test_secrets_are_private_distinct_and_stable(tmp_path: Path) -> None:
    a, b = make(tmp_path / "a"), make(tmp_path / "b")
    a.write()
    b.write()
    sa, sb = Secrets.load(a.paths), Secrets.load(b.paths)
    for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        va, vb = getattr(sa, name), getattr(sb, name)
        assert len(va) >= 40 and va != vb
        assert stat.S_IMODE(a.paths.secret(name).stat().st_mode) == 0o600
        assert va not in a.paths.config.read_text()
    assert len({sa.registration_shared_secret, sa.macaroon_secret_key, sa.form_secret}) == 3
    assert stat.S_IMODE(a.paths.keys.stat().st_mode) == 0o700
    a.write()  # rewriting the config keeps the secrets
    assert Secrets.load(a.paths) == sa
    assert sa.registration_shared_secret not in repr(sa)


def test_missing_secrets_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the server secrets"):
        Secrets.load(ServerPaths(tmp_path))


def test_record_round_trip(tmp_path: Path) -> None:
    fed = FederationTLS(8448, tmp_path / "c.pem", tmp_path / "c.key", (tmp_path / "ca.pem",))
    cfg = make(
        tmp_path, "secure", database=PostgresDatabase("db1", port=6000), federation=fed,
        federation_whitelist=("localhost:1",), fast_federation_retry=True, extra={"a": 1},
    )  # fmt: skip
    assert config_from_record(config_to_record(cfg)) == cfg
    assert config_from_record(config_to_record(make(tmp_path))) == make(tmp_path)
    with pytest.raises(ConfigError, match="malformed"):
        config_from_record({"server_name": "x"})


def test_lab_configure_closed_federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_module, "free_ports", lambda n: list(range(20001, 20001 + n)))
    lab = Lab.configure(
        tmp_path / "lab", [ServerSpec(allow=(0, 1)), ServerSpec(), ServerSpec(no_federation=True)]
    )
    names = [hs.server_name for hs in lab.servers]
    assert names == ["localhost:20004", "localhost:20005", "localhost:20006"]
    assert lab.servers[0].client_url == "http://127.0.0.1:20001"
    a, b, c = (hs.config.to_dict() for hs in lab.servers)
    assert a["federation_domain_whitelist"] == names[:2]
    assert b["federation_domain_whitelist"] == names
    assert c["federation_domain_whitelist"] == []
    assert [li["tls"] for li in a["listeners"]] == [False, True]
    assert len(c["listeners"]) == 1 and "tls_certificate_path" not in c
    assert a["federation_custom_ca_list"] == [str(tmp_path / "lab" / "ca" / "ca.pem")]
    # another process finds the same lab through lab.json
    again = Lab.open(tmp_path / "lab")
    assert [hs.server_name for hs in again.servers] == names
    assert again.servers[0].config == lab.servers[0].config
    with pytest.raises(ConfigError, match="already configured"):
        Lab.configure(tmp_path / "lab", 2)
    with pytest.raises(ConfigError, match=r"servers 0\.\.1"):
        Lab.configure(tmp_path / "lab2", [ServerSpec(allow=(5,)), ServerSpec()])


def test_open_without_lab_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no lab"):
        Lab.open(tmp_path)
