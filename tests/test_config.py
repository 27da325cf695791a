"""Settings precedence: defaults < kaiyuan.toml < KAIYUAN_* environment < CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaiyuan.config import load_settings
from kaiyuan.errors import ConfigError


def test_defaults_bind_loopback_port_8080(tmp_path: Path) -> None:
    settings = load_settings(env={"KAIYUAN_HOME": str(tmp_path)})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.api_key is None
    assert settings.home == tmp_path
    assert settings.models_dir == tmp_path / "models"


def test_precedence_toml_then_env_then_flags(tmp_path: Path) -> None:
    (tmp_path / "kaiyuan.toml").write_text(
        'port = 9000\nctx = 1024\n[server]\nparallel = 2\n[policy]\ncommercial = true\ndeny = ["cc-by-nc-4.0"]\n'
    )
    env = {"KAIYUAN_HOME": str(tmp_path), "KAIYUAN_CTX": "2048"}
    settings = load_settings(env=env, port=None, threads=3)
    assert settings.port == 9000  # toml; flag not given
    assert settings.ctx == 2048  # env beats toml
    assert settings.parallel == 2  # [server] table
    assert settings.threads == 3  # flag
    assert settings.policy == {"commercial": True, "deny": ["cc-by-nc-4.0"]}
    assert load_settings(env=env, ctx=512).ctx == 512  # flag beats env


def test_cors_origins_from_comma_list(tmp_path: Path) -> None:
    env = {"KAIYUAN_HOME": str(tmp_path), "KAIYUAN_CORS_ORIGINS": "http://a.test, http://b.test"}
    assert load_settings(env=env).cors_origins == ["http://a.test", "http://b.test"]


@pytest.mark.parametrize(
    ("env_name", "value", "needle"),
    [
        ("KAIYUAN_PORT", "eighty", "port"),
        ("KAIYUAN_PARALLEL", "0", "parallel"),
        ("KAIYUAN_FLASH_ATTN", "maybe", "flash_attn"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, env_name: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env={"KAIYUAN_HOME": str(tmp_path), env_name: value})


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "kaiyuan.toml").write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={"KAIYUAN_HOME": str(tmp_path)})


def test_hf_endpoint_falls_back_to_hf_variable(tmp_path: Path) -> None:
    env = {"KAIYUAN_HOME": str(tmp_path), "HF_ENDPOINT": "http://127.0.0.1:9"}
    assert load_settings(env=env).hf_endpoint == "http://127.0.0.1:9"
