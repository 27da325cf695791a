"""``kaiyuan serve --replicas N --print-config``: a Serve config file that Ray's own schema accepts, with the
replica count or autoscaling bounds, the router and no secrets; bad bounds are a one-line error."""

from __future__ import annotations

import subprocess
import sys
import warnings

import yaml
from click.testing import CliRunner

from kaiyuan.cli._app import cli


def _validated(text: str) -> dict:
    with warnings.catch_warnings():  # Ray's schema module still uses pydantic-v1 style fields
        warnings.simplefilter("ignore")
        from ray.serve.schema import ServeDeploySchema
    config = yaml.safe_load(text)
    ServeDeploySchema.model_validate(config)
    return config


def test_the_config_file_deploys_the_replicas_and_the_front(monkeypatch) -> None:
    monkeypatch.setenv("KAIYUAN_API_KEY", "secret-key")
    result = CliRunner().invoke(cli, ["serve", "--replicas", "2", "--threads", "1", "--print-config"])
    assert result.exit_code == 0, result.output
    config = _validated(result.output)
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8080}
    (app,) = config["applications"]
    assert app["import_path"] == "kaiyuan.cluster:build_app" and app["args"]["models"] == ["smollm2"]
    replicas, ingress = app["deployments"]
    assert replicas["num_replicas"] == 2 and replicas["ray_actor_options"] == {"num_cpus": 1}
    assert replicas["request_router_config"]["request_router_class"].endswith(":PrefixAffinityRouter")
    assert ingress["name"] == "KaiyuanIngress"
    assert "secret-key" not in result.output  # secrets stay in the cluster's environment


def test_autoscaling_bounds(monkeypatch) -> None:
    result = CliRunner().invoke(
        cli, ["serve", "--replicas", "2", "--min-replicas", "1", "--max-replicas", "4", "--print-config"]
    )
    assert result.exit_code == 0, result.output
    (replicas, _) = _validated(result.output)["applications"][0]["deployments"]
    assert replicas["autoscaling_config"]["downscale_delay_s"] == 600.0  # Ray Serve's own defaults
    assert replicas["autoscaling_config"]["upscale_delay_s"] == 30.0
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "--min-replicas",
            "1",
            "--max-replicas",
            "4",
            "--scale-up-delay",
            "3",
            "--scale-down-delay",
            "20",
            "--print-config",
        ],
    )
    assert result.exit_code == 0, result.output
    (replicas, _) = _validated(result.output)["applications"][0]["deployments"]
    assert "num_replicas" not in replicas
    assert replicas["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "initial_replicas": 1,
        "target_ongoing_requests": 4,
        "upscale_delay_s": 3.0,
        "downscale_delay_s": 20.0,
    }


def test_bounds_that_do_not_hold_are_one_line() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kaiyuan",
            "serve",
            "--replicas",
            "5",
            "--max-replicas",
            "2",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and result.stdout == ""
    assert "min_replicas <= replicas <= max_replicas" in result.stderr and "Traceback" not in result.stderr


def test_settings_come_from_kaiyuan_toml_and_the_environment(kaiyuan_home, monkeypatch) -> None:
    (kaiyuan_home / "kaiyuan.toml").write_text(
        '[server]\nreplicas = 3\nrouting = "round_robin"\nparallel = 6\n'
    )
    monkeypatch.setenv("KAIYUAN_MAX_REPLICAS", "5")
    result = CliRunner().invoke(cli, ["serve", "--print-config"])
    assert result.exit_code == 0, result.output
    (replicas, _) = _validated(result.output)["applications"][0]["deployments"]
    assert replicas["autoscaling_config"]["initial_replicas"] == 3
    assert replicas["autoscaling_config"]["max_replicas"] == 5
    # the router sends a request to its prefix's replica only while that replica has one of its 6 slots free
    assert replicas["request_router_config"]["request_router_kwargs"] == {"policy": "round_robin", "slots": 6}
