"""The compose dev stack matches the code: each Headwater service runs an importable module and
gets only settings its settings class reads, every secret comes from .env and a placeholder one
stops the stack, and the topology is declared once, by its own step, before the services
(no servers)."""

import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from headwater.contracts import Subjects
from headwater.runtime import topology
from headwater.runtime.settings import ServiceSettings
from tests.fixtures.dashboards import dashboards, panels

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
NATS_CONF = ROOT / "deploy" / "nats" / "nats.conf"
CHECK_SECRETS = ROOT / "deploy" / "check-secrets.sh"
TOPOLOGY_MODULE = "headwater.runtime.declare_topology"
DOCKERFILE = "deploy/Dockerfile"
PACKAGE = "headwater.services."

# ${VAR}, ${VAR:?message}, ${VAR:-default}, ... ; `$$` is compose's escaped dollar.
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")
BARE_REF = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")
REQUIRED_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s]+)@", re.IGNORECASE)


@cache
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's two forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def built_from_image() -> dict[str, dict[str, Any]]:
    """The compose services built from the Headwater image (services and one-shot steps)."""
    built = {}
    for name, service in services().items():
        build = service.get("build")
        if isinstance(build, dict) and build.get("dockerfile") == DOCKERFILE:
            built[name] = service
    return built


def headwater_services() -> dict[str, dict[str, Any]]:
    """The five Headwater services: the image running `python -m headwater.services.*`."""
    return {
        name: service
        for name, service in built_from_image().items()
        if any(part.startswith(PACKAGE) for part in command(service))
    }


def module_of(service: dict[str, Any]) -> str:
    cmd = command(service)
    expected = f"expected `python -m {PACKAGE}<module>`, got {cmd}"
    assert len(cmd) == 3, expected
    assert cmd[0] in ("python", "python3"), expected
    assert cmd[1] == "-m", expected
    assert cmd[2].startswith(PACKAGE), expected
    return cmd[2]


def repo_service_modules() -> set[str]:
    """Every service the repository ships (services/*/src/headwater/services/<module>)."""
    return {
        PACKAGE + path.parent.name
        for path in ROOT.glob("services/*/src/headwater/services/*/__main__.py")
    }


def settings_class(module: str) -> type[ServiceSettings]:
    """The one ServiceSettings subclass defined in `<module>.settings`."""
    settings = importlib.import_module(f"{module}.settings")
    found = [
        cls
        for _, cls in inspect.getmembers(settings, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls.__module__ == settings.__name__
    ]
    assert len(found) == 1, f"{settings.__name__} defines {found}, expected one settings class"
    return found[0]


def env_names(cls: type[ServiceSettings]) -> set[str]:
    """The environment variables pydantic-settings reads for `cls` (upper-cased)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def has_schema(module: str) -> bool:
    """A service owns a Postgres schema when its package ships migrations (NNN_name.sql)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    assert spec.submodule_search_locations, f"{module} is not a package"
    return any(
        any((Path(p) / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
        for p in spec.submodule_search_locations
    )


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def strings(value: Any) -> list[str]:
    """Every string inside a parsed YAML document, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def nats_users() -> dict[str, str]:
    """NATS user -> the environment variable nats.conf reads its password from."""
    pairs = re.findall(
        r'user:\s*"?([\w-]+)"?\s+password:\s*\$([A-Za-z_][A-Za-z0-9_]*)', NATS_CONF.read_text()
    )
    return dict(pairs)


HEADWATER = sorted(headwater_services())


def test_every_headwater_service_is_in_the_stack() -> None:
    modules = {module_of(service) for service in headwater_services().values()}
    assert modules == repo_service_modules()
    assert len(modules) == 5


@pytest.mark.parametrize("name", HEADWATER)
def test_service_runs_an_importable_module(name: str) -> None:
    module = module_of(services()[name])
    assert importlib.util.find_spec(module) is not None, module
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


@pytest.mark.parametrize("name", HEADWATER)
def test_service_gets_only_settings_it_reads(name: str) -> None:
    module = module_of(services()[name])
    read = env_names(settings_class(module))
    given = {
        key.upper() for key in environment(services()[name]) if key.upper().startswith("HEADWATER_")
    }
    assert given <= read, f"{name} is given settings it does not read: {sorted(given - read)}"


@pytest.mark.parametrize("name", HEADWATER)
def test_service_gets_the_settings_it_needs(name: str) -> None:
    module = module_of(services()[name])
    env = environment(services()[name])
    # NATS requires a user (deploy/nats/nats.conf has an authorization block).
    for key in ("HEADWATER_NATS_URL", "HEADWATER_NATS_USER", "HEADWATER_NATS_PASSWORD"):
        assert env.get(key), f"{name} needs {key}"
    if has_schema(module):
        assert env.get("HEADWATER_PG_DSN"), f"{name} owns a schema and needs HEADWATER_PG_DSN"
    else:
        assert "HEADWATER_PG_DSN" not in env, f"{name} owns no schema: give it no Postgres login"
    # The service can be built from exactly this environment (a service that keeps objects
    # fails to build without an object store; one that keeps none must not be given one).
    settings_cls = settings_class(module)
    # The values as given, each ${VAR:?...} standing for a secret "x".
    values = {
        k.removeprefix("HEADWATER_").lower(): VAR_REF.sub("x", v)
        for k, v in env.items()
        if k.startswith("HEADWATER_")
    }
    values = {k: v for k, v in values.items() if k in settings_cls.model_fields}
    values["s3_endpoint"] = "http://minio:9000" if "s3_endpoint" in values else None
    app = importlib.import_module(f"{module}.app")
    service = app.build_app(settings_cls.model_validate(values))
    keeps_objects = bool(service.res.buckets)
    s3 = {"HEADWATER_S3_ENDPOINT", "HEADWATER_S3_ACCESS_KEY", "HEADWATER_S3_SECRET_KEY"}
    assert (s3 <= env.keys()) == keeps_objects, f"{name}: S3 settings iff it keeps objects"


@pytest.mark.parametrize("name", HEADWATER)
def test_service_logs_into_nats_as_its_own_user(name: str) -> None:
    env = environment(services()[name])
    users = nats_users()
    user = env["HEADWATER_NATS_USER"]
    assert user in users, f"{name}: NATS user {user!r} is not in {NATS_CONF.name}"
    password = VAR_REF.fullmatch(env["HEADWATER_NATS_PASSWORD"])
    expected = f"{name}: HEADWATER_NATS_PASSWORD must be ${{{users[user]}:?...}} (nats.conf)"
    assert password is not None, expected
    assert password.group(1) == users[user], expected
    assert users[user] in environment(services()["nats"]), f"nats is not given {users[user]}"
    others = {
        environment(s)["HEADWATER_NATS_USER"] for n, s in headwater_services().items() if n != name
    }
    assert user not in others, f"{name} shares the NATS user {user!r}"


def test_every_nats_password_is_passed_to_the_server() -> None:
    env = environment(services()["nats"])
    missing = set(nats_users().values()) - env.keys()
    assert not missing, f"nats.conf reads {sorted(missing)}, which the nats service is not given"


def test_every_variable_is_required_and_in_env_example() -> None:
    # Compose interpolates values, not comments: look at the parsed document's strings.
    text = "\n".join(strings(compose()))
    refs = VAR_REF.findall(text)
    assert refs, "expected secrets to come from ${VAR:?...} references"
    optional = sorted({name for name, rest in refs if not rest.startswith(":?")})
    assert not optional, f"use ${{VAR:?set in .env}} so compose fails without them: {optional}"
    bare = sorted(set(BARE_REF.findall(VAR_REF.sub("", text))))
    assert not bare, f"use ${{VAR:?...}}, not $VAR: {bare}"
    documented = env_example()
    used = {name for name, _ in refs}
    assert used <= documented.keys(), (
        f"missing from .env.example: {sorted(used - documented.keys())}"
    )
    assert documented.keys() <= used, (
        f"unused in docker-compose.yml: {sorted(documented.keys() - used)}"
    )


def test_no_literal_passwords_in_compose() -> None:
    for name, service in services().items():
        for key, value in environment(service).items():
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.fullmatch(value), (
                    f"{name}: {key} must be a ${{VAR:?...}} reference, not a literal"
                )
    for value in strings(compose()):
        for password in URL_PASSWORD.findall(value):
            assert REQUIRED_REF.fullmatch(password), f"literal password in URL {value!r}"


def test_nats_fsyncs_every_write() -> None:
    text = NATS_CONF.read_text()
    jetstream = re.search(r"^jetstream\s*\{(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert jetstream is not None, "nats.conf has no jetstream block"
    assert re.search(r"^\s*sync_interval:\s*always\s*$", jetstream.group(1), re.MULTILINE)


def test_mounted_files_and_build_contexts_exist() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                kind, source = volume.get("type"), str(volume.get("source", ""))
            else:
                source = str(volume).split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            elif kind == "volume":
                assert source in declared, f"{name} uses volume {source!r}, not declared"
        build = service.get("build")
        if isinstance(build, dict):
            context = ROOT / str(build.get("context", "."))
            assert context.is_dir(), f"{name}: build context {context} does not exist"
            assert (context / str(build.get("dockerfile", "Dockerfile"))).is_file()


def test_nats_lets_each_durable_consumer_ack() -> None:
    # Acks are allowed per consumer ($JS.ACK.<stream>.<durable>.>): a renamed consumer in
    # headwater.runtime.topology must be renamed in nats.conf too.
    text = NATS_CONF.read_text()
    for spec in topology.consumers(Subjects()).values():
        subject = f"$JS.ACK.{spec.stream}.{spec.durable}.>"
        assert f'"{subject}"' in text, f"nats.conf lets nobody ack {spec.durable}: add {subject}"


def test_nats_lets_the_executor_publish_every_event_it_sends() -> None:
    text = NATS_CONF.read_text()
    executor = text[text.index('user: "executor"') :]
    executor = executor[: executor.index("user:", 1)]
    s = Subjects()
    for subject in (s.partition_landed("*"), s.task_attempt_failed("*"), s.task_failed("*")):
        assert f'"{subject}"' in executor, f"nats.conf does not let the executor publish {subject}"


def test_depends_on_existing_services() -> None:
    names = services().keys()
    for name, service in services().items():
        depends = service.get("depends_on") or []
        targets = set(depends) if isinstance(depends, list | dict) else {depends}
        assert targets <= names, f"{name} depends on unknown {sorted(targets - names)}"
        assert name not in targets, f"{name} depends on itself"


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """A service's dependencies and their conditions (`service_started` for the list form)."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()
    }


def needs(name: str) -> set[str]:
    """Every service `name` waits for, transitively."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in depends_on(services()[todo.pop()]):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def nats_user_block(user: str) -> str:
    text = NATS_CONF.read_text()
    block = text[text.index(f'user: "{user}"') :]
    return block[: block.index("user:", 1)] if "user:" in block[1:] else block


def topology_step() -> tuple[str, dict[str, Any]]:
    steps = [(name, s) for name, s in built_from_image().items() if TOPOLOGY_MODULE in command(s)]
    assert len(steps) == 1, f"expected one service running {TOPOLOGY_MODULE}, got {steps}"
    return steps[0]


def test_the_topology_step_runs_once_as_the_nats_admin_before_every_service() -> None:
    name, step = topology_step()
    assert step.get("restart") == "no", f"{name} is a one-shot step"
    env = environment(step)
    user = env["HEADWATER_NATS_USER"]
    assert user in nats_users(), f"{name}: NATS user {user!r} is not in {NATS_CONF.name}"
    password = VAR_REF.fullmatch(env["HEADWATER_NATS_PASSWORD"])
    assert password is not None
    assert password.group(1) == nats_users()[user]
    assert '"$JS.API.>"' in nats_user_block(user), f"{user} must be allowed the JetStream API"
    assert depends_on(step).get("nats") == "service_healthy"
    for service_name, service in headwater_services().items():
        assert depends_on(service).get(name) == "service_completed_successfully", (
            f"{service_name} must start after {name} has exited 0"
        )
        assert environment(service).get("HEADWATER_DECLARE_TOPOLOGY") == "false", (
            f"{service_name}: its NATS user may not declare the topology"
        )


@pytest.mark.parametrize("name", HEADWATER)
def test_no_service_user_holds_the_jetstream_admin_api(name: str) -> None:
    """A service's NATS user is allowed only named API subjects (its consumers, its buckets),
    never a wildcard over the API nor the verbs that create, change or delete."""
    block = nats_user_block(environment(services()[name])["HEADWATER_NATS_USER"])
    allowed = re.findall(r'"(\$JS\.API\.[^"]*)"', block)
    assert "$JS.API.>" not in allowed
    for subject in allowed:
        assert not subject.endswith(".>") or subject.startswith("$JS.API.DIRECT.GET.KV_"), subject
        for verb in ("CREATE", "UPDATE", "DELETE", "PURGE"):
            assert f".{verb}." not in subject, f"{name} may {verb}: {subject}"


def test_check_secrets_gets_every_secret_and_guards_everything_that_holds_one() -> None:
    checks = [(n, s) for n, s in services().items() if "/check-secrets.sh" in " ".join(command(s))]
    assert len(checks) == 1, "expected one check-secrets step"
    name, check = checks[0]
    assert set(environment(check)) == env_example().keys(), (
        f"{name} must be given every variable of .env.example, and only those"
    )
    for other, service in services().items():
        if other == name or not VAR_REF.search(" ".join(strings(service))):
            continue
        assert name in needs(other), f"{other} holds a secret but does not wait for {name}"
        cond = [depends_on(services()[n]).get(name) for n in {other, *needs(other)}]
        assert "service_completed_successfully" in cond, other


def run_check_secrets(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(CHECK_SECRETS)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_secrets_refuses_the_example_values_naming_each() -> None:
    example = env_example()
    done = run_check_secrets(example)
    assert done.returncode == 1
    for variable in example:
        assert f"{variable} still holds the placeholder" in done.stderr


def test_check_secrets_passes_real_values() -> None:
    real = {variable: f"hw{i}x8f3k2m9q" for i, variable in enumerate(env_example())}
    done = run_check_secrets({**real, "NATS_CLI_PASSWORD": "change-me-nats-cli"})
    assert done.returncode == 1
    assert "NATS_CLI_PASSWORD" in done.stderr
    assert "NATS_UPSTREAM_PASSWORD" not in done.stderr
    assert run_check_secrets(real).returncode == 0


GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"


def host_port(value: str) -> tuple[str, int]:
    url = urlsplit(value if "://" in value else f"tcp://{value}")
    assert url.hostname is not None
    assert url.port is not None
    return url.hostname, url.port


def test_traces_flow_from_the_services_through_the_collector_to_tempo_and_grafana() -> None:
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    tempo = yaml.safe_load((ROOT / "deploy" / "tempo.yaml").read_text())
    otlp_http = host_port(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"])[1]
    for name, service in headwater_services().items():
        endpoint = environment(service)["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert host_port(endpoint) == ("otel-collector", otlp_http), name
    exporters = [e for k, e in collector["exporters"].items() if k.startswith("otlp")]
    tempo_grpc = host_port(
        tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    )
    assert [host_port(e["endpoint"]) for e in exporters] == [("tempo", tempo_grpc[1])]
    sources = yaml.safe_load((GRAFANA / "datasources" / "datasources.yaml").read_text())
    by_type = {s["type"]: s for s in sources["datasources"]}
    assert host_port(by_type["tempo"]["url"]) == ("tempo", tempo["server"]["http_listen_port"])


def test_grafana_reads_postgres_as_the_read_only_role() -> None:
    sources = yaml.safe_load((GRAFANA / "datasources" / "datasources.yaml").read_text())
    pg = next(s for s in sources["datasources"] if s["type"] == "grafana-postgresql-datasource")
    assert host_port(pg["url"])[0] in services()
    assert pg["jsonData"]["database"] == environment(services()["postgres"])["POSTGRES_DB"]
    assert (
        f"CREATE ROLE {pg['user']} LOGIN" in (ROOT / "deploy" / "postgres" / "init.sh").read_text()
    )
    variable = BARE_REF.fullmatch(pg["secureJsonData"]["password"])
    assert variable is not None, "the password comes from Grafana's environment"
    assert variable.group(1) in environment(services()["grafana"])
    assert variable.group(1) in environment(services()["postgres"])


def test_every_dashboard_panel_names_a_provisioned_data_source() -> None:
    sources = yaml.safe_load((GRAFANA / "datasources" / "datasources.yaml").read_text())
    uids = {s["uid"]: s["type"] for s in sources["datasources"]}
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert {d.name for d in dashboards} >= {"headwater.json", "pipeline.json"}
    mounted = [str(v) for v in services()["grafana"]["volumes"]]
    assert any(v.startswith("./deploy/grafana/provisioning:") for v in mounted)
    for path in dashboards:
        for panel in json.loads(path.read_text()).get("panels", []):
            for ref in [
                panel.get("datasource"),
                *(t.get("datasource") for t in panel.get("targets", [])),
            ]:
                if isinstance(ref, dict) and "uid" in ref:
                    assert ref["uid"] in uids, f"{path.name}: {panel.get('title')}"
                    assert ref.get("type", uids[ref["uid"]]) == uids[ref["uid"]]


PROMETHEUS_CONFIG = "deploy/prometheus.yaml"


def flag(service: dict[str, Any], name: str) -> str | None:
    """The value of a `--name=value` flag in a service's command."""
    for part in command(service):
        if part.startswith(f"--{name}="):
            return part.split("=", 1)[1]
    return None


def mounted_at(service: dict[str, Any], source: str) -> str | None:
    """Where a service mounts the file `source` (./deploy/...), if it does."""
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if parts[0] in (source, f"./{source}"):
            return parts[1]
    return None


def prometheus_service() -> tuple[str, dict[str, Any]]:
    found = [(n, s) for n, s in services().items() if mounted_at(s, PROMETHEUS_CONFIG)]
    assert len(found) == 1, f"expected one service mounting {PROMETHEUS_CONFIG}"
    return found[0]


def health_port(name: str) -> int:
    port = environment(services()[name]).get("HEADWATER_HEALTH_PORT")
    assert port, f"{name} serves no /metrics: set HEADWATER_HEALTH_PORT"
    return int(port)


def scrape_targets() -> dict[str, set[tuple[str, int]]]:
    """Prometheus's jobs and the (host, port) each scrapes, from static or DNS targets."""
    config = yaml.safe_load((ROOT / PROMETHEUS_CONFIG).read_text())
    jobs: dict[str, set[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        targets = jobs.setdefault(job["job_name"], set())
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for static in job.get("static_configs", []):
            targets.update(host_port(t) for t in static["targets"])
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "compose's DNS answers A records"
            targets.update((n, int(dns["port"])) for n in dns["names"])
    return jobs


def test_prometheus_scrapes_every_service_on_the_health_port_compose_sets() -> None:
    name, prometheus = prometheus_service()
    assert flag(prometheus, "config.file") == mounted_at(prometheus, PROMETHEUS_CONFIG)
    jobs = scrape_targets()
    scraped = set().union(*jobs.values())
    expected = {(service, health_port(service)) for service in HEADWATER}
    assert scraped == expected, f"{name} scrapes {sorted(scraped)}, services serve {expected}"
    for job, targets in jobs.items():  # one job per service: `job` tells them apart
        assert {host for host, _ in targets} == {job}, job


@pytest.mark.parametrize("name", HEADWATER)
def test_compose_checks_each_service_on_its_readiness_endpoint(name: str) -> None:
    check = " ".join(str(part) for part in services()[name]["healthcheck"]["test"])
    assert f"127.0.0.1:{health_port(name)}/readyz" in check, check


@pytest.mark.parametrize("name", HEADWATER)
def test_metrics_reach_prometheus_once(name: str) -> None:
    """Scraped, so not pushed over OTLP too (every series would arrive twice): or, if a
    service pushes them, the collector has a metrics pipeline to take them."""
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    pushes = environment(services()[name]).get("OTEL_METRICS_EXPORTER", "otlp") != "none"
    assert pushes == ("metrics" in collector["service"]["pipelines"]), name


def test_the_collector_pipelines_use_what_it_defines() -> None:
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    for pipeline, spec in collector["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in spec.get(kind, []):
                assert component in collector.get(kind, {}), f"{pipeline}: {component}"
    assert "otel-collector" in services()
    assert mounted_at(services()["otel-collector"], "deploy/otel-collector.yaml") == flag(
        services()["otel-collector"], "config"
    )


def test_grafana_reads_prometheus_where_compose_runs_it() -> None:
    name, prometheus = prometheus_service()
    sources = yaml.safe_load((GRAFANA / "datasources" / "datasources.yaml").read_text())
    [source] = [s for s in sources["datasources"] if s["type"] == "prometheus"]
    listen = flag(prometheus, "web.listen-address") or ":9090"
    assert host_port(source["url"]) == (name, int(listen.rsplit(":", 1)[1]))
    assert name in depends_on(services()["grafana"]), "Grafana starts after Prometheus"


def test_grafana_provisions_the_dashboards_it_mounts() -> None:
    grafana = services()["grafana"]
    target = mounted_at(grafana, "deploy/grafana/provisioning")
    assert target is not None
    providers = yaml.safe_load((GRAFANA / "dashboards" / "dashboards.yaml").read_text())
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        assert path.startswith(f"{target}/"), path
        assert (GRAFANA / path.removeprefix(f"{target}/")).is_dir(), path
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / home.removeprefix(f"{target}/")).is_file(), home
    sources = yaml.safe_load((GRAFANA / "datasources" / "datasources.yaml").read_text())
    uids = {s["uid"]: s["type"] for s in sources["datasources"]}
    used = set()
    for name, dashboard in dashboards().items():  # panels inside rows too
        for panel in panels(dashboard):
            for ref in [
                panel.get("datasource"),
                *(t.get("datasource") for t in panel.get("targets", [])),
            ]:
                if isinstance(ref, dict) and "uid" in ref:
                    assert uids.get(ref["uid"]) == ref.get("type", uids.get(ref["uid"])), (
                        f"{name}: {panel.get('title')} names {ref}, not provisioned"
                    )
                    used.add(ref["uid"])
    assert used == set(uids), f"provisioned and never used: {sorted(set(uids) - used)}"
