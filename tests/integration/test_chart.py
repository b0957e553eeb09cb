"""The app-backend Helm chart, rendered with the real helm binary.

helm comes from ``$KUBELAB_TOOLS_DIR``, ``<repo>/.tools/bin`` or PATH (``scripts/install-tools.sh``
puts it into ``.tools/bin``); without it the helm tests are skipped. Rendered objects are
validated against the Kubernetes 1.31 OpenAPI schemas (kubernetes-validate, strict) and the
Istio CRD schemas from ``../shared/schemas/crds`` (made strict like server-side field
validation), and the course's ``kubectl patch`` is applied to the rendered VirtualService.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubelab.k8s.patch import apply_json_patch

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "app-backend"
CRD_DIR = REPO.parent / "shared" / "schemas" / "crds"
NAMESPACE = "istio"
K8S_VERSION = "1.31"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The command students run in the course; it must keep working on the rendered object.
COURSE_PATCH_COMMAND = (
    "kubectl patch virtualservice app-backend -n istio --type='json' "
    """-p='[{"op":"replace","path":"/spec/http/0/route/0/weight","value":50},"""
    """{"op":"replace","path":"/spec/http/0/route/1/weight","value":50}]'"""
)

Obj = dict[str, Any]


# --------------------------------------------------------------------------- helpers


def _find_helm() -> str | None:
    dirs = [Path(d) for d in [os.environ.get("KUBELAB_TOOLS_DIR")] if d]
    dirs.append(REPO / ".tools" / "bin")
    for d in dirs:
        candidate = d / "helm"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("helm")


HELM = _find_helm()


@pytest.fixture(scope="session")
def helm() -> str:
    if HELM is None:
        pytest.skip("helm not found: run scripts/install-tools.sh")
    return HELM


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    if HELM is None:
        pytest.skip("helm not found: run scripts/install-tools.sh")
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60, check=False)


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return run_helm("template", "app-backend", str(CHART), "-n", NAMESPACE, *args)


def load_all(text: str) -> list[Obj]:
    return [doc for doc in yaml.load_all(text, Loader=LOADER) if doc]


@functools.cache
def _render_cached(args: tuple[str, ...]) -> str:
    result = template(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(*args: str) -> list[Obj]:
    """Rendered objects (fresh copies; the helm output is cached per argument list)."""
    return load_all(_render_cached(args))


def by_kind(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def the(objects: list[Obj], kind: str, name: str = "app-backend") -> Obj:
    return by_kind(objects)[(kind, name)]


def write_values(tmp_path: Path, text: str) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------- Istio CRD schemas


_OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _strict(schema: Any) -> None:
    """Close every object schema that lists properties, like server-side strict validation."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for item in schema:
            _strict(item)


def _load_big_yaml(path: Path) -> list[Any]:
    """Parse a large YAML file with PyYAML's C loader (0.3 s for the Istio CRDs)."""
    return list(yaml.load_all(path.read_text(), Loader=LOADER))


@functools.cache
def istio_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> JSON schema of the whole object, from the Istio CRDs."""
    schemas: dict[tuple[str, str], Obj] = {}
    for crd in _load_big_yaml(CRD_DIR / "istio-crds.yaml"):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            spec_schema = copy.deepcopy(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
            _strict(spec_schema)
            api_version = f"{group}/{version['name']}"
            schemas[(api_version, kind)] = {
                "type": "object",
                "additionalProperties": False,
                "required": ["apiVersion", "kind", "metadata", "spec"],
                "properties": {
                    "apiVersion": {"const": api_version},
                    "kind": {"const": kind},
                    "metadata": _OBJECT_META,
                    "spec": spec_schema,
                },
            }
    return schemas


def validate_object(obj: Obj) -> None:
    """Validate one rendered object against Kubernetes 1.31 or the Istio CRD schema."""
    api_version: str = obj["apiVersion"]
    if ".istio.io/" in api_version:
        if not CRD_DIR.is_dir():
            return  # the shared CRD folder is optional
        schema = istio_schemas().get((api_version, obj["kind"]))
        assert schema is not None, f"{api_version} {obj['kind']} is not served by the Istio CRDs"
        jsonschema.Draft7Validator(schema).validate(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# Value sets that together switch every template branch on and off.
CONFIGS: dict[str, tuple[str, ...]] = {
    "default": (),
    "gateway": ("--set", "gateway.enabled=true"),
    "gateway-tls-hosts": (
        "--set",
        "gateway.enabled=true,gateway.tls.enabled=true,gateway.tls.credentialName=app-cert",
        "--set",
        "gateway.hosts={*,app.example.org}",
    ),
    "no-tester-v1-only": (
        "--set",
        "tester.enabled=false,versions.v2.enabled=false,weights.v1=100,weights.v2=0",
    ),
    "everything-custom": (
        "--set",
        "nameOverride=shop,image.registry=gitea.example.org,image.pullSecrets={pull1,pull2}",
        "--set",
        "commonLabels.app\\.kubernetes\\.io/managed-by=kubelab,commonLabels.lesson=istio-split",
        "--set",
        "versions.v1.replicas=2,versions.v2.bugAfter=5,weights.v1=0,weights.v2=100",
        "--set",
        "podSecurityContext.fsGroup=10001,podAnnotations=null",
    ),
}


# --------------------------------------------------------------------------- tests


def test_schema_file_is_generated() -> None:
    spec = importlib.util.spec_from_file_location(
        "generate_schema", CHART / "schema" / "generate_schema.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render()
    actual = (CHART / "values.schema.json").read_text()
    assert actual == expected, "values.schema.json is stale: run schema/generate_schema.py"


def _schema_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_schema_weight_rule_by_python_jsonschema() -> None:
    """Every valid pair passes; neighbours of valid pairs and out-of-range values fail."""
    validator = _schema_validator()
    values = yaml.load((CHART / "values.yaml").read_text(), Loader=LOADER)
    assert validator.is_valid(values)

    def ok(v1: Any, v2: Any) -> bool:
        return bool(validator.is_valid({**values, "weights": {"v1": v1, "v2": v2}}))

    for k in range(101):
        assert ok(k, 100 - k)
        assert not ok(k, 101 - k)
        assert not ok(k, 99 - k)
    assert not ok(-10, 110)
    assert not ok(110, -10)
    assert not ok(45.5, 54.5)
    assert not ok("50", "50")


def test_lint_strict(helm: str) -> None:
    for args in ([], ["--set", "gateway.enabled=true,tester.enabled=false"]):
        result = run_helm("lint", "--strict", str(CHART), *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_default_render_objects(helm: str) -> None:
    objects = render()
    assert sorted(by_kind(objects)) == [
        ("Deployment", "app-backend-v1"),
        ("Deployment", "app-backend-v2"),
        ("DestinationRule", "app-backend"),
        ("Pod", "curl-test"),
        ("Service", "app-backend"),
        ("VirtualService", "app-backend"),
    ]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"]["app.kubernetes.io/name"] == "app-backend"
        assert meta["labels"]["app.kubernetes.io/instance"] == "app-backend"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["labels"]["helm.sh/chart"] == "app-backend-0.1.0"
    api = {obj["kind"]: obj["apiVersion"] for obj in objects}
    assert api["VirtualService"] == api["DestinationRule"] == "networking.istio.io/v1"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_deployment_labels_and_container(helm: str, version: str) -> None:
    dep = the(render(), "Deployment", f"app-backend-{version}")
    selector = {"app": "app-backend", "version": version}
    assert dep["spec"]["selector"] == {"matchLabels": selector}
    assert selector.items() <= dep["metadata"]["labels"].items()
    pod = dep["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == version
    assert "helm.sh/chart" not in pod["metadata"]["labels"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert dep["spec"]["replicas"] == 1

    (container,) = pod["spec"]["containers"]
    assert container["image"] == f"kubelab/app-backend:{version}"
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"APP_VERSION": version, "BUG_AFTER": "30", "PORT": "8080"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_service_and_destination_rule(helm: str) -> None:
    objects = render()
    svc = the(objects, "Service")
    assert svc["spec"]["selector"] == {"app": "app-backend"}
    (port,) = svc["spec"]["ports"]
    assert port["name"] == "http" and port["port"] == 80 and port["targetPort"] == 8080
    dr = the(objects, "DestinationRule")
    assert dr["spec"]["host"] == "app-backend"
    assert dr["spec"]["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]


def test_tester_pod(helm: str) -> None:
    pod = the(render(), "Pod", "curl-test")
    assert pod["metadata"]["labels"]["app"] == "curl-test"
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("curlimages/curl:")
    assert "sleep" in " ".join(container["command"])
    assert container["securityContext"]["runAsNonRoot"] is True
    assert set(container["resources"]) == {"requests", "limits"}
    assert not any(o["kind"] == "Pod" for o in render("--set", "tester.enabled=false"))


def _routes(objects: list[Obj]) -> list[tuple[str, str, int]]:
    (vs,) = [o for o in objects if o["kind"] == "VirtualService"]
    (http,) = vs["spec"]["http"]
    return [
        (r["destination"]["host"], r["destination"]["subset"], r["weight"]) for r in http["route"]
    ]


def test_virtual_service_default_split(helm: str) -> None:
    objects = render()
    vs = the(objects, "VirtualService")
    assert vs["spec"]["hosts"] == ["app-backend"]
    assert "gateways" not in vs["spec"]
    assert _routes(objects) == [("app-backend", "v1", 90), ("app-backend", "v2", 10)]


@pytest.mark.parametrize(("v1", "v2"), [(50, 50), (0, 100), (100, 0), (1, 99)])
def test_custom_weights(helm: str, v1: int, v2: int) -> None:
    objects = render("--set", f"weights.v1={v1},weights.v2={v2}")
    assert _routes(objects) == [("app-backend", "v1", v1), ("app-backend", "v2", v2)]


def test_weights_from_values_file(helm: str, tmp_path: Path) -> None:
    objects = render("-f", write_values(tmp_path, "weights:\n  v1: 25\n  v2: 75\n"))
    assert _routes(objects) == [("app-backend", "v1", 25), ("app-backend", "v2", 75)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "weights.v1=45,weights.v2=50"), "weights.v2 must be one of the following: 55"),
        (("--set", "weights.v1=45"), "weights.v2 must be one of the following: 55"),
        (("--set", "weights.v1=100,weights.v2=10"), "weights.v2 must be one of the following: 0"),
        (("--set", "weights.v1=-10,weights.v2=110"), "weights.v1: Must be greater than or equal"),
        (("--set", "weights.v1=110,weights.v2=-10"), "weights.v1: Must be less than or equal"),
        (("--set", "weights.v1=abc"), "weights.v1: Invalid type. Expected: integer"),
        (("--set-string", "weights.v1=90"), "weights.v1: Invalid type. Expected: integer"),
        (("--set", "weights.v3=0"), "Additional property v3 is not allowed"),
        (("--set", "replicas=3"), "Additional property replicas is not allowed"),
        (("--set", "image.tag=v3"), "Additional property tag is not allowed"),
        (("--set", "gateway.enabled=yes"), "gateway.enabled: Invalid type. Expected: boolean"),
        (("--set", "image.pullPolicy=Sometimes"), "image.pullPolicy: image.pullPolicy must be"),
        (("--set", "gateway.enabled=true,gateway.tls.enabled=true"), "credentialName"),
        (("--set", "nameOverride=App_Backend"), "nameOverride: Does not match pattern"),
        (
            ("--set", "versions.v1.bugAfter=0"),
            "versions.v1.bugAfter: Must be greater than or equal",
        ),
        (
            ("--set", "versions.v2.replicas=-1"),
            "versions.v2.replicas: Must be greater than or equal",
        ),
    ],
)
def test_bad_values_are_rejected(helm: str, args: tuple[str, ...], message: str) -> None:
    result = template(*args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_non_integer_weights_in_values_file_are_rejected(helm: str, tmp_path: Path) -> None:
    result = template("-f", write_values(tmp_path, "weights:\n  v1: 45.5\n  v2: 54.5\n"))
    assert result.returncode != 0
    assert "weights.v1: Invalid type. Expected: integer, given: number" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--set", "weights.v1=45,weights.v2=50"),
            "weights.v1 + weights.v2 must be 100 (got 45 + 50)",
        ),
        (("--set", "weights.v1=120,weights.v2=-20"), "weights.v1 must be an integer from 0 to 100"),
        (
            ("--set-string", "weights.v1=45.5", "--set", "weights.v2=54"),
            "weights.v1 must be an integer from 0 to 100 (got 45.5)",
        ),
        (
            ("--set", "gateway.enabled=true,gateway.tls.enabled=true"),
            "gateway.tls.enabled needs gateway.tls.credentialName",
        ),
    ],
)
def test_template_guards_without_schema(helm: str, args: tuple[str, ...], message: str) -> None:
    result = template("--skip-schema-validation", *args)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_disabled_version_keeps_both_routes(helm: str) -> None:
    objects = render("--set", "versions.v2.enabled=false,weights.v1=100,weights.v2=0")
    assert ("Deployment", "app-backend-v2") not in by_kind(objects)
    assert ("Deployment", "app-backend-v1") in by_kind(objects)
    assert _routes(objects) == [("app-backend", "v1", 100), ("app-backend", "v2", 0)]
    subsets = [s["name"] for s in the(objects, "DestinationRule")["spec"]["subsets"]]
    assert subsets == ["v1", "v2"]


def test_disabled_version_with_weight_fails(helm: str) -> None:
    result = template("--set", "versions.v2.enabled=false")
    assert result.returncode != 0
    assert "weights.v2 is 10 but versions.v2.enabled is false" in result.stderr


def test_gateway(helm: str) -> None:
    objects = render(*CONFIGS["gateway"])
    gw = the(objects, "Gateway", "app-backend-gateway")
    assert gw["apiVersion"] == "networking.istio.io/v1"
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}
    assert gw["spec"]["servers"] == [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    ]
    vs = the(objects, "VirtualService")
    assert vs["spec"]["gateways"] == ["app-backend-gateway", "mesh"]
    # Istio rejects "*" in a VirtualService bound to the mesh; it stays in the Gateway only.
    assert vs["spec"]["hosts"] == ["app-backend"]
    assert _routes(objects) == [("app-backend", "v1", 90), ("app-backend", "v2", 10)]


def test_gateway_tls_and_hosts(helm: str) -> None:
    objects = render(*CONFIGS["gateway-tls-hosts"])
    http, https = the(objects, "Gateway", "app-backend-gateway")["spec"]["servers"]
    assert http["hosts"] == https["hosts"] == ["*", "app.example.org"]
    assert https["port"] == {"number": 443, "name": "https", "protocol": "HTTPS"}
    assert https["tls"] == {"mode": "SIMPLE", "credentialName": "app-cert"}
    assert the(objects, "VirtualService")["spec"]["hosts"] == ["app-backend", "app.example.org"]


def test_custom_names_labels_and_image(helm: str) -> None:
    objects = render(*CONFIGS["everything-custom"])
    assert sorted(by_kind(objects)) == [
        ("Deployment", "shop-v1"),
        ("Deployment", "shop-v2"),
        ("DestinationRule", "shop"),
        ("Pod", "curl-test"),
        ("Service", "shop"),
        ("VirtualService", "shop"),
    ]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kubelab"
        assert labels["lesson"] == "istio-split"
    dep = the(objects, "Deployment", "shop-v1")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["lesson"] == "istio-split"
    assert "annotations" not in pod["metadata"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "pull1"}, {"name": "pull2"}]
    assert pod["spec"]["securityContext"] == {"fsGroup": 10001}
    assert pod["spec"]["containers"][0]["image"] == "gitea.example.org/kubelab/app-backend:v1"
    v2_env = the(objects, "Deployment", "shop-v2")["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    assert {"name": "BUG_AFTER", "value": "5"} in v2_env
    assert _routes(objects) == [("shop", "v1", 0), ("shop", "v2", 100)]
    assert the(objects, "Service", "shop")["spec"]["selector"] == {"app": "shop"}


def test_common_labels_cannot_break_selectors(helm: str) -> None:
    objects = render("--set", "commonLabels.app=other,commonLabels.version=v9")
    dep = the(objects, "Deployment", "app-backend-v1")
    assert dep["spec"]["template"]["metadata"]["labels"]["app"] == "app-backend"
    assert dep["spec"]["template"]["metadata"]["labels"]["version"] == "v1"
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "app-backend", "version": "v1"}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_rendered_objects_validate(helm: str, config: str) -> None:
    objects = render(*CONFIGS[config])
    assert objects
    for obj in objects:
        try:
            validate_object(obj)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            pytest.fail(f"{config}: {obj['kind']}/{obj['metadata']['name']}: {exc}")


@pytest.mark.skipif(not CRD_DIR.is_dir(), reason=f"{CRD_DIR} not present")
def test_strict_istio_validation_catches_mistakes(helm: str) -> None:
    """The strict CRD check is not vacuous: unknown fields and wrong types are caught."""
    vs = the(render(), "VirtualService")
    bad_field = copy.deepcopy(vs)
    bad_field["spec"]["http"][0]["route"][0]["wieght"] = 1
    bad_type = copy.deepcopy(vs)
    bad_type["spec"]["http"][0]["route"][0]["weight"] = "50"
    old_api = copy.deepcopy(vs)
    old_api["apiVersion"] = "networking.istio.io/v1alpha4"
    for broken in (bad_field, bad_type):
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken)
    with pytest.raises(AssertionError):
        validate_object(old_api)


def test_course_patch_gives_50_50(helm: str) -> None:
    argv = shlex.split(COURSE_PATCH_COMMAND)
    assert argv[:4] == ["kubectl", "patch", "virtualservice", "app-backend"]
    assert argv[argv.index("-n") + 1] == NAMESPACE
    assert "--type=json" in argv
    patch = json.loads(next(a for a in argv if a.startswith("-p="))[3:])

    for args in (CONFIGS["default"], CONFIGS["gateway"], ("--set", "weights.v1=0,weights.v2=100")):
        vs = the(render(*args), "VirtualService")
        assert vs["metadata"]["namespace"] == NAMESPACE
        patched = apply_json_patch(vs, patch)
        assert _routes([patched]) == [("app-backend", "v1", 50), ("app-backend", "v2", 50)]
        validate_object(patched)
