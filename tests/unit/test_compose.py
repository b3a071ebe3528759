"""compose.yaml and the Dockerfile, checked structurally: Docker does not run where tests run.

What can be checked without Docker is: the services and their wiring, that every command the
containers run is a real `syncgate` subcommand, that the settings they set are real settings,
and that the image runs as a non-root user with a health check on /readyz.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from cryptography.fernet import Fernet

from cli.main import cli
from consumers.settings import ConsumerSettings
from gateway.settings import GatewaySettings
from tests.support import monitoring as monitoring_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_the_stack_is_a_broker_a_gateway_and_a_consumer(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"rabbitmq", "gateway", "consumer"}


def test_the_broker_has_the_management_ui_on_standard_ports(compose: dict[str, Any]) -> None:
    rabbitmq = services(compose)["rabbitmq"]
    assert rabbitmq["image"] == "rabbitmq:4.3-management"
    published = {port.rsplit(":", 1)[-1]: port for port in rabbitmq["ports"]}
    assert published.keys() == {"5672", "15672"}
    # Standard host ports, on loopback only: the broker's password is public.
    assert published["5672"] == "127.0.0.1:5672:5672"
    assert published["15672"] == "127.0.0.1:15672:15672"


def test_the_broker_is_healthy_only_when_it_answers(compose: dict[str, Any]) -> None:
    test = services(compose)["rabbitmq"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1] == "rabbitmq-diagnostics"
    assert {"ping", "check_port_connectivity"} & set(test[2:])


def test_the_broker_loads_the_exported_definitions(compose: dict[str, Any]) -> None:
    mounts = dict(volume.split(":")[:2] for volume in services(compose)["rabbitmq"]["volumes"])
    definitions_in_container = mounts["./definitions.json"]
    conf_in_container = mounts["./deploy/rabbitmq.conf"]
    assert conf_in_container.startswith("/etc/rabbitmq/")
    assert conf_in_container.endswith(".conf")
    conf = (ROOT / "deploy" / "rabbitmq.conf").read_text()
    assert f"management.load_definitions = {definitions_in_container}" in conf.splitlines()
    assert (ROOT / "definitions.json").is_file()


@pytest.mark.parametrize("service", ["gateway", "consumer"])
def test_each_syncgate_service_waits_for_a_healthy_broker(
    compose: dict[str, Any], service: str
) -> None:
    config = services(compose)[service]
    assert config["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert config["build"] == "."


@pytest.mark.parametrize("service", ["gateway", "consumer"])
def test_secrets_come_from_the_uncommitted_env_file(compose: dict[str, Any], service: str) -> None:
    config = services(compose)[service]
    assert config["env_file"] == ".env"
    assert "SYNCGATE_SESSION_KEYS" not in config["environment"]
    gitignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignored
    assert ".env" in (ROOT / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize(
    ("service", "settings"), [("gateway", GatewaySettings), ("consumer", ConsumerSettings)]
)
def test_every_variable_set_is_a_real_setting(
    compose: dict[str, Any], service: str, settings: type[GatewaySettings | ConsumerSettings]
) -> None:
    known = {f"SYNCGATE_{name.upper()}" for name in settings.model_fields}
    environment = services(compose)[service]["environment"]
    assert set(environment) <= known, set(environment) - known
    assert environment["SYNCGATE_AMQP_URL"].startswith("amqp://syncgate:")
    assert "@rabbitmq:5672/" in environment["SYNCGATE_AMQP_URL"]


def test_the_gateway_listens_on_every_interface_and_is_published(
    compose: dict[str, Any],
) -> None:
    gateway = services(compose)["gateway"]
    assert gateway["environment"]["SYNCGATE_HOST"] == "0.0.0.0"  # noqa: S104 - in a container
    port = gateway["environment"]["SYNCGATE_PORT"]
    assert f"127.0.0.1:{port}:{port}" in gateway["ports"]


def test_state_lives_in_volumes(compose: dict[str, Any]) -> None:
    gateway = services(compose)["gateway"]
    consumer = services(compose)["consumer"]
    gateway_mounts = [volume.split(":")[1] for volume in gateway["volumes"]]
    consumer_mounts = [volume.split(":")[1] for volume in consumer["volumes"]]
    env = gateway["environment"]
    assert str(Path(env["SYNCGATE_USERS_FILE"]).parent) in gateway_mounts
    assert str(Path(env["SYNCGATE_APP_SETTINGS_FILE"]).parent) in gateway_mounts
    assert str(Path(consumer["environment"]["SYNCGATE_RUN_STORE"]).parent) in consumer_mounts
    named = {volume.split(":")[0] for volume in gateway["volumes"] + consumer["volumes"]}
    assert {name for name in named if not name.startswith(".")} <= set(compose["volumes"])


def test_the_gateway_reads_the_run_store_the_consumer_writes(compose: dict[str, Any]) -> None:
    # GET /api/runs/{id}, which the page polls, reads the consumer's SQLite file.
    gateway = services(compose)["gateway"]
    consumer = services(compose)["consumer"]
    store = consumer["environment"]["SYNCGATE_RUN_STORE"]
    assert gateway["environment"]["SYNCGATE_RUN_STORE"] == store
    directory = str(Path(store).parent)
    gateway_volume = next(v for v in gateway["volumes"] if v.split(":")[1] == directory)
    consumer_volume = next(v for v in consumer["volumes"] if v.split(":")[1] == directory)
    assert gateway_volume.split(":")[0] == consumer_volume.split(":")[0], "one shared volume"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert directory in dockerfile, "the image makes the mount point, owned by its user"


def test_the_consumer_metrics_are_reachable(compose: dict[str, Any]) -> None:
    consumer = services(compose)["consumer"]
    env = consumer["environment"]
    assert env["SYNCGATE_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - in a container
    port = env["SYNCGATE_METRICS_PORT"]
    assert f"127.0.0.1:{port}:{port}" in consumer["ports"]


def subcommand(path: list[str]) -> click.Command | None:
    command: click.Command = cli
    for name in path:
        if not isinstance(command, click.Group) or name not in command.commands:
            return None
        command = command.commands[name]
    return command


def test_the_image_runs_the_syncgate_console_script(dockerfile: list[tuple[str, str]]) -> None:
    (entrypoint,) = [args for keyword, args in dockerfile if keyword == "ENTRYPOINT"]
    assert entrypoint == '["syncgate"]'
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["syncgate"] == "cli.main:cli"


@pytest.mark.parametrize("service", ["gateway", "consumer"])
def test_every_service_command_is_a_real_subcommand(compose: dict[str, Any], service: str) -> None:
    command = services(compose)[service]["command"]
    found = subcommand(command if isinstance(command, list) else shlex.split(command))
    assert found is not None, f"`syncgate {command}` is not a command"
    assert not isinstance(found, click.Group), "a group only prints its help"


def test_the_default_command_is_a_real_subcommand(dockerfile: list[tuple[str, str]]) -> None:
    (cmd,) = [args for keyword, args in dockerfile if keyword == "CMD"]
    assert subcommand(yaml.safe_load(cmd)) is not None


def test_a_missing_subcommand_is_caught() -> None:
    """The check above can fail: a made-up command is not found."""
    assert subcommand(["gatewya"]) is None
    assert subcommand(["users"]) is not None


def test_the_image_is_python_311_slim_and_installs_the_package(
    dockerfile: list[tuple[str, str]],
) -> None:
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    assert any(re.search(r"\bpip install (\.|/src)(\s|$)", run) for run in runs)


def test_the_image_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users, "no USER: the processes would run as root"
    assert users[-1] not in {"root", "0", "0:0"}
    last_user = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "USER")
    entrypoint = max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "ENTRYPOINT")
    assert last_user < entrypoint


def test_the_image_checks_its_health_on_readyz_without_curl(
    dockerfile: list[tuple[str, str]],
) -> None:
    (check,) = [args for keyword, args in dockerfile if keyword == "HEALTHCHECK"]
    assert "/readyz" in check
    assert "urllib.request" in check
    assert "curl" not in check


def test_the_consumer_does_not_inherit_the_http_health_check(compose: dict[str, Any]) -> None:
    # It shares the image but serves no HTTP: the /readyz check would mark it unhealthy.
    assert services(compose)["consumer"]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services(compose)["gateway"]


# --- the optional monitoring profile (deploy/compose.monitoring.yaml) -----------------------

MONITORING = ROOT / "deploy" / "compose.monitoring.yaml"


@pytest.fixture(scope="module")
def monitoring() -> dict[str, Any]:
    loaded = yaml.safe_load(MONITORING.read_text())
    assert isinstance(loaded, dict)
    return loaded


def bind_mounts(service: dict[str, Any], base: Path) -> dict[str, Path]:
    """A service's bind mounts: the path in the container -> the file or dir on the host."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (base / source).resolve()
    return mounts


def in_container(mounts: dict[str, Path], path: str) -> Path:
    """Where a path inside the container comes from on the host, through its bind mounts."""
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source / path[len(target) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted from the repository")


def test_the_monitoring_profile_is_included_and_starts_only_when_asked(
    compose: dict[str, Any], monitoring: dict[str, Any]
) -> None:
    assert compose["include"] == ["deploy/compose.monitoring.yaml"]
    assert set(services(monitoring)) == {"prometheus", "grafana"}
    assert not set(services(monitoring)) & set(services(compose))
    for config in services(monitoring).values():
        assert config["profiles"] == ["monitoring"]
        for port in config["ports"]:
            assert port.startswith("127.0.0.1:"), port
    assert set(monitoring["volumes"]) == {"prometheus-data", "grafana-data"}


def test_every_file_the_profile_mounts_exists_and_parses(monitoring: dict[str, Any]) -> None:
    base = MONITORING.parent
    mounted = [
        path
        for config in services(monitoring).values()
        for path in bind_mounts(config, base).values()
    ]
    files = [
        f
        for path in mounted
        for f in ([path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else [])
    ]
    assert all(path.exists() for path in mounted), mounted
    checked = 0
    for path in files:
        if path.suffix in {".yml", ".yaml"}:
            assert yaml.safe_load(path.read_text()) is not None, path
            checked += 1
        elif path.suffix == ".json":
            assert json.loads(path.read_text()), path
            checked += 1
    assert checked >= 6, files


def test_prometheus_loads_the_checked_config_and_rules(monitoring: dict[str, Any]) -> None:
    prometheus = services(monitoring)["prometheus"]
    mounts = bind_mounts(prometheus, MONITORING.parent)
    [config_flag] = [arg for arg in prometheus["command"] if arg.startswith("--config.file=")]
    config = in_container(mounts, config_flag.split("=", 1)[1])
    assert config == monitoring_files.SCRAPE_CONFIG
    for rule_file in yaml.safe_load(config.read_text())["rule_files"]:
        # rule_files are relative to the config file, in the container as here.
        assert (config.parent / rule_file).resolve() == monitoring_files.ALERTS


def test_prometheus_scrapes_the_stacks_services(
    compose: dict[str, Any], monitoring: dict[str, Any]
) -> None:
    stack = services(compose)
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in yaml.safe_load(monitoring_files.SCRAPE_CONFIG.read_text())["scrape_configs"]
    }
    gateway_port = stack["gateway"]["environment"]["SYNCGATE_PORT"]
    consumer_port = stack["consumer"]["environment"]["SYNCGATE_METRICS_PORT"]
    assert targets["syncgate-gateway"] == [f"gateway:{gateway_port}"]
    assert targets["syncgate-consumer"] == [f"consumer:{consumer_port}"]
    # The plugin's default port, inside the compose network (not published on the host).
    assert targets["rabbitmq-detailed"] == targets["rabbitmq"] == ["rabbitmq:15692"]
    hosts = {target.split(":")[0] for job in targets.values() for target in job}
    assert hosts <= set(stack)


def test_the_broker_enables_the_prometheus_plugin(compose: dict[str, Any]) -> None:
    mounts = bind_mounts(services(compose)["rabbitmq"], ROOT)
    plugins_file = mounts["/etc/rabbitmq/enabled_plugins"]
    text = plugins_file.read_text().strip()
    # An Erlang list term: [a,b].
    assert re.fullmatch(r"\[[a-z_,\s]+\]\.", text), text
    plugins = {name.strip() for name in text[1:-2].split(",")}
    assert plugins == {"rabbitmq_management", "rabbitmq_prometheus"}


def test_grafana_is_provisioned_with_the_profiles_prometheus_and_the_checked_dashboard(
    monitoring: dict[str, Any],
) -> None:
    grafana = services(monitoring)["grafana"]
    mounts = bind_mounts(grafana, MONITORING.parent)
    provisioning = in_container(mounts, "/etc/grafana/provisioning")
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    prometheus_port = services(monitoring)["prometheus"]["ports"][0].rsplit(":", 1)[-1]
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "syncgate.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    # What the provider loads: every file mounted into its dir, which is the checked dashboard.
    directory = provider["options"]["path"].rstrip("/") + "/"
    loaded = [path for target, path in mounts.items() if target.startswith(directory)]
    assert loaded == [monitoring_files.DASHBOARD]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert in_container(mounts, home) == monitoring_files.DASHBOARD


def test_the_profile_references_only_metrics_the_checks_cover(monitoring: dict[str, Any]) -> None:
    """The files the profile mounts are the ones whose every metric name
    tests/integration/test_monitoring.py finds on real scrapes, and no others hold PromQL."""
    mounted = {
        path
        for config in services(monitoring).values()
        for path in bind_mounts(config, MONITORING.parent).values()
    }
    promql_files = {
        f
        for path in mounted
        for f in ([path] if path.is_file() else path.rglob("*"))
        if f.is_file() and ("expr" in f.read_text())
    }
    assert promql_files == {monitoring_files.ALERTS, monitoring_files.DASHBOARD}
    assert monitoring_files.all_selectors()


# --- the scale-out override (deploy/compose.scale.yaml) -------------------------------------

SCALE = ROOT / "deploy" / "compose.scale.yaml"
SCALE_PROFILE = ["scale"]
INTERPOLATION = re.compile(r"\$\{([A-Z_]+)(:?[?-])?([^}]*)\}")


@pytest.fixture(scope="module")
def scale() -> dict[str, Any]:
    loaded = yaml.safe_load(SCALE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def interpolated(value: str) -> str:
    """The value as compose would see it with every required variable set to `<VAR>`."""

    def replace(match: re.Match[str]) -> str:
        name, operator = match.group(1), match.group(2)
        assert operator == ":?", f"${{{name}}} must be required (:?), not defaulted"
        return f"<{name}>"

    return INTERPOLATION.sub(replace, value)


def merged(compose: dict[str, Any], scale: dict[str, Any]) -> dict[str, Any]:
    """`docker compose -f compose.yaml -f deploy/compose.scale.yaml config`'s services, for the
    keys the override uses: maps (environment, depends_on) merge, other values replace."""
    result = {name: dict(config) for name, config in services(compose).items()}
    for name, config in services(scale).items():
        target = result.setdefault(name, {})
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                target[key] = {**target[key], **value}
            else:
                target[key] = value
    for config in result.values():
        config["environment"] = {
            key: interpolated(str(value)) for key, value in config.get("environment", {}).items()
        }
    return result


def test_the_override_adds_stores_a_second_gateway_and_consumer_and_a_balancer(
    compose: dict[str, Any], scale: dict[str, Any]
) -> None:
    added = set(services(scale)) - set(services(compose))
    assert added == {"postgres", "redis", "gateway-2", "consumer-2", "balancer"}
    for name in added:
        assert services(scale)[name]["profiles"] == SCALE_PROFILE, name
    # The base services are only moved onto the stores and beside the balancer: settings,
    # dependencies and networks, no more.
    for name in set(services(scale)) & set(services(compose)):
        assert set(services(scale)[name]) <= {"environment", "depends_on", "networks"}, name
    assert set(scale["volumes"]) == {"postgres-data", "redis-data"}


def test_the_gateways_trust_the_balancers_fixed_address_and_only_it(
    scale: dict[str, Any],
) -> None:
    balancer = services(scale)["balancer"]["networks"]["balancer"]["ipv4_address"]
    subnet = ipaddress.ip_network(scale["networks"]["balancer"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(balancer) in subnet
    for name in ("gateway", "gateway-2"):
        service = services(scale)[name]
        assert service["environment"]["SYNCGATE_TRUSTED_PROXIES"] == balancer, name
        assert "balancer" in service["networks"], name
    nginx = (ROOT / "deploy" / "nginx-scale.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in nginx


@pytest.mark.parametrize(
    ("service", "settings"),
    [
        ("gateway", GatewaySettings),
        ("gateway-2", GatewaySettings),
        ("consumer", ConsumerSettings),
        ("consumer-2", ConsumerSettings),
    ],
)
def test_every_syncgate_service_of_the_scale_stack_sets_only_real_settings(
    compose: dict[str, Any],
    scale: dict[str, Any],
    service: str,
    settings: type[GatewaySettings | ConsumerSettings],
) -> None:
    config = merged(compose, scale)[service]
    known = {f"SYNCGATE_{name.upper()}" for name in settings.model_fields}
    assert set(config["environment"]) <= known, set(config["environment"]) - known
    assert config["env_file"] == ".env"
    assert "SYNCGATE_SESSION_KEYS" not in config["environment"]
    command = config["command"]
    assert subcommand(command) is not None
    assert config["build"] == "."


def test_all_four_share_one_postgres_and_the_gateways_one_redis(
    compose: dict[str, Any], scale: dict[str, Any]
) -> None:
    stack = merged(compose, scale)
    syncgate = ["gateway", "gateway-2", "consumer", "consumer-2"]
    stores = {stack[name]["environment"]["SYNCGATE_RUN_STORE"] for name in syncgate}
    assert stores == {"postgresql://syncgate:<POSTGRES_PASSWORD>@postgres:5432/syncgate"}
    postgres = stack["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "syncgate"
    assert postgres["POSTGRES_DB"] == "syncgate"
    assert postgres["POSTGRES_PASSWORD"] == "<POSTGRES_PASSWORD>"  # from .env, never committed
    redis_urls = {stack[name]["environment"].get("SYNCGATE_REDIS_URL") for name in syncgate[:2]}
    assert redis_urls == {"redis://redis:6379/0"}
    assert all("SYNCGATE_REDIS_URL" not in stack[name]["environment"] for name in syncgate[2:])

    # Each store's settings are valid for the processes that read them.
    def values(name: str) -> dict[str, Any]:
        env = stack[name]["environment"].items()
        return {key.removeprefix("SYNCGATE_").lower(): value for key, value in env}

    GatewaySettings(**values("gateway-2"), session_keys=Fernet.generate_key().decode())
    ConsumerSettings(**values("consumer-2"))


def test_every_dependency_exists_and_waits_for_a_health_check(
    compose: dict[str, Any], scale: dict[str, Any]
) -> None:
    stack = merged(compose, scale)
    for name, config in stack.items():
        depends = config.get("depends_on", {})
        for dependency in depends:
            assert dependency in stack, (name, dependency)
            if isinstance(depends, dict) and depends[dependency].get("condition") == (
                "service_healthy"
            ):
                check = stack[dependency].get("healthcheck", {})
                assert check.get("test"), (name, dependency)
                assert not check.get("disable"), (name, dependency)
    for name in ("gateway", "gateway-2"):
        assert {"rabbitmq", "postgres", "redis"} <= set(stack[name]["depends_on"]), name
    for name in ("consumer", "consumer-2"):
        assert {"rabbitmq", "postgres"} <= set(stack[name]["depends_on"]), name


def test_the_second_gateway_reads_the_first_ones_files(
    compose: dict[str, Any], scale: dict[str, Any]
) -> None:
    stack = merged(compose, scale)
    first, second = stack["gateway"], stack["gateway-2"]
    for setting in ("SYNCGATE_USERS_FILE", "SYNCGATE_APP_SETTINGS_FILE", "SYNCGATE_PORT"):
        assert first["environment"][setting] == second["environment"][setting], setting

    def sources(config: dict[str, Any]) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in config["volumes"]}

    for path in ("SYNCGATE_USERS_FILE", "SYNCGATE_APP_SETTINGS_FILE"):
        directory = str(Path(first["environment"][path]).parent)
        assert sources(first)[directory] == sources(second)[directory], path
    users_dir = str(Path(second["environment"]["SYNCGATE_USERS_FILE"]).parent)
    assert f"gateway-data:{users_dir}:ro" in second["volumes"]  # one writer: the first gateway
    assert "ports" not in second, "reached through the balancer only"


def test_the_balancer_spreads_over_both_gateways_on_a_loopback_port(
    compose: dict[str, Any], scale: dict[str, Any]
) -> None:
    stack = merged(compose, scale)
    balancer = stack["balancer"]
    mounts = bind_mounts(balancer, ROOT)  # -f paths are relative to the base file
    conf = in_container(mounts, "/etc/nginx/conf.d/default.conf").read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream is not None
    servers = set(re.findall(r"^\s*server\s+([\w.-]+:\d+);", upstream.group(2), re.MULTILINE))
    gateways = {
        f"{name}:{stack[name]['environment']['SYNCGATE_PORT']}"
        for name in stack
        if stack[name].get("command") == ["gateway"]
    }
    assert servers == gateways == {"gateway:8080", "gateway-2:8080"}
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    [listen] = re.findall(r"^\s*listen\s+(\d+);", conf, re.MULTILINE)
    assert balancer["ports"] == [f"127.0.0.1:{listen}:{listen}"]
    assert set(balancer["depends_on"]) == {"gateway", "gateway-2"}


def test_the_scale_stack_publishes_on_loopback_only_and_mounts_files_that_exist(
    scale: dict[str, Any],
) -> None:
    published = []
    for name, config in services(scale).items():
        for port in config.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
            published.append(port.split(":")[1])
        for source in bind_mounts(config, ROOT).values():
            assert source.exists(), (name, source)
    assert len(published) == len(set(published)), published
    assert "8080" not in published  # compose.yaml's gateway
    assert "9464" not in published  # compose.yaml's consumer


def test_the_interpolation_check_can_fail() -> None:
    assert interpolated("a${X:?set X}b") == "a<X>b"
    with pytest.raises(AssertionError):
        interpolated("${X:-default}")
