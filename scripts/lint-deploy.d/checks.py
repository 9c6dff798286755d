"""The checks of scripts/lint-deploy that need a program: run with the tools venv's python.

    checks.py compose COMPOSE_FILE COMPOSE_SCHEMA
    checks.py compose-env COMPOSE_FILE SERVICE       (prints KEY=VALUE lines)
    checks.py ecs-env ECS_TEMPLATE                   (prints KEY=VALUE lines)
    checks.py observability DASHBOARD RULES [CATALOGUE_RS]
    checks.py manifests RENDERED.yaml VALUES.yaml OUT_PREFIX K8S_VERSION...

Each prints what it checked and exits non-zero with the reasons on the first kind of failure.
"""

import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import promql_parser
import yaml


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


# --- compose ---------------------------------------------------------------------------------


def check_compose(compose_path, schema_path):
    with open(compose_path) as f:
        compose = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)
    # The packaged schema predates the spec's top-level `name` (the project name); add it as the
    # current spec defines it rather than loosen anything else.
    schema["properties"].setdefault("name", {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"})
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    if errors:
        fail("\n".join(f"{compose_path}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors))
    base = os.path.dirname(compose_path)
    problems = []
    for name, service in compose["services"].items():
        # Bind mounts: the files the stack shares with the chart must exist where it says.
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                if not os.path.exists(os.path.join(base, source)):
                    problems.append(f"service {name}: bind mount source {source} does not exist")
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = os.path.join(base, build.get("context", "."), build.get("dockerfile", "Dockerfile"))
            if not os.path.exists(dockerfile):
                problems.append(f"service {name}: {dockerfile} does not exist")
            elif "target" in build:
                with open(dockerfile) as f:
                    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", f.read(), re.M | re.I)
                if build["target"] not in stages:
                    problems.append(f"service {name}: target {build['target']} is not a stage of {dockerfile} ({stages})")
    if problems:
        fail("\n".join(problems))
    print(f"{compose_path}: {len(compose['services'])} services valid")


def compose_env(compose_path, service):
    """A compose service's environment as KEY=VALUE lines (merge keys resolved)."""
    with open(compose_path) as f:
        environment = yaml.safe_load(f)["services"][service].get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    for key, value in environment.items():
        print(f"{key}={value}")


class CloudFormationLoader(yaml.SafeLoader):
    """Reads !Ref, !Sub, !GetAtt... as {"Ref": ...} and so on, like the JSON form."""


def _intrinsic(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}


CloudFormationLoader.add_multi_constructor("!", lambda loader, suffix, node: _intrinsic(loader, suffix, node))

# Values of the core stack's exports (what Fn::ImportValue yields), for the environment check.
EXPORT_EXAMPLES = {
    "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/resizeq-uploads",
    "DeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/resizeq-uploads-dlq",
    "DestinationBucketName": "photos-resized",
}


def ecs_env(template_path):
    """The worker container's environment in the ECS template as KEY=VALUE lines, with
    parameters at their defaults and the core stack's exports at example values."""
    with open(template_path) as f:
        template = yaml.load(f, CloudFormationLoader)
    parameters = template["Parameters"]

    def resolve(value):
        if isinstance(value, str):
            return value
        if "Ref" in value:
            if value["Ref"] == "AWS::Region":
                return "us-east-1"
            return str(parameters[value["Ref"]]["Default"])
        if "Fn::ImportValue" in value:
            export = value["Fn::ImportValue"]["Fn::Sub"].split("-", 1)[1]
            return EXPORT_EXAMPLES[export]
        fail(f"{template_path}: cannot resolve {value}")

    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in resource["Properties"]["ContainerDefinitions"]:
                for variable in container.get("Environment", []):
                    print(f"{variable['Name']}={resolve(variable['Value'])}")


# --- dashboard and alert rules ---------------------------------------------------------------

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's variables, replaced by something PromQL parses.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".+"}


def catalogue_names(path):
    """Metric names and kinds from the worker's catalogue (metric!(CONST, "name", Kind, ...))."""
    with open(path) as f:
        source = f.read()
    found = dict(re.findall(r'metric!\(\s*\w+\s*,\s*"(resizeq_[a-z0-9_]+)"\s*,\s*(\w+)', source))
    if not found:
        fail(f"{path}: no metric!(...) entries found; has the catalogue's format changed?")
    return found


def check_observability(dashboard_path, rules_path, catalogue_path=None):
    exprs = []
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    ids = set()

    def walk(panels):
        for panel in panels:
            if panel["id"] in ids:
                fail(f"{dashboard_path}: panel id {panel['id']} used twice")
            ids.add(panel["id"])
            for target in panel.get("targets", []):
                exprs.append((f"{dashboard_path}: panel {panel['title']!r}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    if not dashboard.get("uid") or not exprs:
        fail(f"{dashboard_path}: no uid or no queries")

    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    alerts = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            where = f"{rules_path}: {rule.get('alert') or rule.get('record')}"
            if "alert" in rule:
                alerts += 1
                if rule.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                    fail(f"{where}: labels.severity must be info, warning or critical")
                if not rule.get("annotations", {}).get("summary"):
                    fail(f"{where}: no annotations.summary")
            exprs.append((where, rule["expr"]))

    known = catalogue_names(catalogue_path) if catalogue_path else None
    problems = []
    for where, expr in exprs:
        parsable = expr
        for variable, value in GRAFANA_VARIABLES.items():
            parsable = parsable.replace(variable, value)
        try:
            promql_parser.parse(parsable)
        except ValueError as e:
            problems.append(f"{where}: PromQL does not parse: {e}\n    {expr}")
        if known is None:
            continue
        for name in re.findall(r"\bresizeq_[a-z0-9_]+", expr):
            base = name
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and known.get(name[: -len(suffix)]) == "Histogram":
                    base = name[: -len(suffix)]
            if base not in known:
                problems.append(f"{where}: {name} is not in the metric catalogue ({catalogue_path})")
    if problems:
        fail("\n".join(problems))
    against = f", metric names checked against {catalogue_path}" if known else ""
    print(f"{len(exprs)} PromQL expressions parse ({alerts} alerts){against}")


# --- rendered manifests ----------------------------------------------------------------------

# Keys of KEDA's aws-sqs-queue trigger and of TriggerAuthentication's podIdentity (KEDA 2.13+
# docs); the CRD schemas take any string map there, so a typo would pass them silently.
SQS_TRIGGER_KEYS = {"queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion",
                    "awsEndpoint", "scaleOnInFlight", "scaleOnDelayed", "identityOwner"}
POD_IDENTITY_KEYS = {"provider", "roleArn", "identityOwner", "identityId"}
CRD_API_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def expectations(values_path):
    """The `# lint-deploy expects: Kind=N ...` and `# lint-deploy expects-text: TEXT` lines of a
    ci values file: how many of each kind it renders, and text the render must contain."""
    counts, texts = {}, []
    with open(values_path) as f:
        for line in f:
            m = re.match(r"#\s*lint-deploy expects:\s*(.*)", line)
            if m:
                for item in m.group(1).split():
                    kind, count = item.split("=")
                    counts[kind] = int(count)
            m = re.match(r"#\s*lint-deploy expects-text:\s*(.*\S)", line)
            if m:
                texts.append(m.group(1))
    if not counts:
        fail(f"{values_path}: no '# lint-deploy expects: Kind=N' line")
    return counts, texts


def check_pod_spec(name, spec, problems):
    pod_sc = spec.get("securityContext", {})
    if not pod_sc.get("runAsNonRoot"):
        problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken is not false")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
            problems.append(f"{where}: no liveness probe on /healthz")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
            problems.append(f"{where}: no readiness probe on /readyz")
        if not c.get("resources", {}).get("limits", {}).get("memory"):
            problems.append(f"{where}: no memory limit")
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
            problems.append(f"{where}: /tmp is not an emptyDir (the root filesystem is read-only)")


def check_manifests(rendered_path, values_path, out_prefix, versions):
    with open(rendered_path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []
    crds = []
    kinds = {}
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if doc["apiVersion"].startswith(CRD_API_GROUPS):
            crds.append(doc)
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"{kind}/{name}: not valid for Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{kind}/{name}: no Kubernetes {version} schema for {doc['apiVersion']}")

    worker_toml = None
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        component = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if kind == "ConfigMap" and "resizeq.toml" in doc.get("data", {}):
            with open(f"{out_prefix}.{component}.toml", "w") as f:
                f.write(doc["data"]["resizeq.toml"])
            if component == "worker":
                worker_toml = doc["data"]["resizeq.toml"]
        if kind == "Deployment":
            check_pod_spec(f"Deployment/{name}", doc["spec"]["template"]["spec"], problems)
        if kind == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                unknown = set(trigger["metadata"]) - SQS_TRIGGER_KEYS
                if trigger["type"] != "aws-sqs-queue" or unknown:
                    problems.append(f"ScaledObject/{name}: trigger {trigger['type']} with unknown keys {sorted(unknown)}")
        if kind == "TriggerAuthentication":
            unknown = set(doc["spec"].get("podIdentity", {})) - POD_IDENTITY_KEYS
            if unknown or doc["spec"]["podIdentity"].get("provider") != "aws":
                problems.append(f"TriggerAuthentication/{name}: podIdentity {doc['spec'].get('podIdentity')}")

    # The grace period must outlast the worker's drain (worker.shutdown_timeout_secs, default 25).
    if worker_toml is not None:
        m = re.search(r"^shutdown_timeout_secs = (\d+)$", worker_toml, re.M)
        shutdown = int(m.group(1)) if m else 25
        for doc in docs:
            if doc["kind"] == "Deployment" and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "worker":
                grace = doc["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
                if grace <= shutdown:
                    problems.append(f"worker terminationGracePeriodSeconds {grace} <= shutdown_timeout_secs {shutdown}")
    else:
        problems.append("no worker ConfigMap with resizeq.toml rendered")

    counts, texts = expectations(values_path)
    for kind, count in counts.items():
        if kinds.get(kind, 0) != count:
            problems.append(f"expected {count} {kind}, rendered {kinds.get(kind, 0)} ({values_path})")
    with open(rendered_path) as f:
        rendered = f.read()
    for text in texts:
        if text not in rendered:
            problems.append(f"expected the render to contain {text!r} ({values_path})")

    with open(f"{out_prefix}.crds.json", "w") as f:
        json.dump(crds, f)
    if problems:
        fail("\n".join(problems))
    summary = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    print(f"{rendered_path}: valid for Kubernetes {' and '.join(versions)}: {summary}")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "compose":
        check_compose(*args)
    elif command == "compose-env":
        compose_env(*args)
    elif command == "ecs-env":
        ecs_env(*args)
    elif command == "observability":
        check_observability(*args)
    elif command == "manifests":
        check_manifests(args[0], args[1], args[2], args[3:])
    else:
        fail(f"unknown check {command}")


if __name__ == "__main__":
    main()
