"""Server settings from the environment, the public façade, and ``vectorstream serve``'s refusals."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

import vectorstream.server as server
from vectorstream.cli.serve import register
from vectorstream.errors import ConfigError
from vectorstream.server import ServerSettings, server_settings_from_env


def test_public_names_are_all() -> None:
    public = {n for n in dir(server) if not n.startswith("_")}
    modules = {
        "annotations",
        "app",
        "batcher",
        "errors",
        "fastpath",
        "jobs",
        "metrics",
        "middleware",
        "responses",
        "routes",
        "schemas",
        "settings",
        "state",
    }
    assert public - modules == set(server.__all__)


def test_environment_values_are_typed_and_arguments_win() -> None:
    env = {
        "VECTORSTREAM_SERVER_PORT": "9001",
        "VECTORSTREAM_API_KEY": "k",
        "VECTORSTREAM_SERVER_CORS_ORIGINS": "https://a.org, https://b.org",
        "VECTORSTREAM_SERVER_TRUNCATE": "yes",
        "VECTORSTREAM_SERVER_BATCH_WAIT_MS": "2.5",
    }
    s = server_settings_from_env(env, port=9002)
    assert s.port == 9002 and s.api_key == "k" and s.truncate is True and s.batch_wait_ms == 2.5
    assert s.cors_origins == ("https://a.org", "https://b.org")
    assert s.host == "127.0.0.1"  # bound to loopback unless told otherwise
    assert server_settings_from_env({}).cors_origins == ()  # CORS off by default
    with pytest.raises(ConfigError, match="max_inputs"):
        server_settings_from_env({"VECTORSTREAM_SERVER_MAX_INPUTS": "many"})
    with pytest.raises(ConfigError, match="unknown server settings"):
        server_settings_from_env({}, colour="red")


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="port"):
        ServerSettings(port=70000)
    with pytest.raises(ConfigError, match="queue_max_inputs"):
        ServerSettings(queue_max_inputs=0)


def test_serve_refuses_bad_settings_with_exit_code_2() -> None:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:
        """A group, so 'serve' is a subcommand as in the real CLI."""

    result = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2
    assert "port must be in 1..65535" in result.output


def test_inference_lanes_split_the_cores() -> None:
    from vectorstream.server.app import inference_lanes

    assert inference_lanes(ServerSettings(), cores=2) == (2, 1)
    assert inference_lanes(ServerSettings(), cores=16) == (2, 8)
    assert inference_lanes(ServerSettings(), cores=1) == (1, 1)
    assert inference_lanes(ServerSettings(lanes=1), cores=2) == (1, 2)
    assert inference_lanes(ServerSettings(lanes=4), cores=2) == (4, 1)
    assert inference_lanes(ServerSettings(backend="torch"), cores=8) == (1, None)
    with pytest.raises(ConfigError):
        ServerSettings(lanes=-1)
