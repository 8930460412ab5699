#!/usr/bin/env bash
# A Docker engine and Docker Compose for the compose deployment and its end-to-end test, on machines
# that have none; and local stand-ins for the images deploy/docker-compose.yml and deploy/Dockerfile
# name, where no image registry can be reached.
#
#   docker.sh up       an engine that answers, and the compose plugin (install and start what is missing)
#   docker.sh down     stop the dockerd this script started, by its saved pid; any other engine is left alone
#   docker.sh status   who runs the engine, and which compose; exit 1 when no engine answers
#   docker.sh env      `export DOCKER_CONFIG=...` when the compose plugin is the one built here (eval it)
#   docker.sh images [IMAGE...]  build the stand-ins that are absent (all the compose file and the
#                      Dockerfile name, or the ones given; deploy/standins/README.md)
#
# A machine whose engine already answers and whose `docker compose` already works uses both untouched:
# nothing is installed, started, or stopped. Otherwise:
# - the engine is Debian's docker.io (apt, only if dockerd is missing), started as `dockerd` by pid with
#   its log and pid under $PIZZA_RUN_DIR/docker. It serves the default socket, so every checkout on the
#   machine and a plain `docker` command find the one engine (two engines would fight over the bridge
#   network). Its data root, where the image layers live, is $PIZZA_CACHE/docker: outside the checkout,
#   so a fresh clone's CI run reuses the stand-ins and the workspace image's dependency layer instead of
#   compiling every crate again, and deleting the cache deletes them like every other build here.
# - Docker Compose v5.6.0 is built from the Go module proxy into $PIZZA_CACHE/docker-compose-v5.6.0 and
#   reached through DOCKER_CONFIG (a cli-plugins folder of its own), never through the user's ~/.docker.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/deploy/local"
CACHE=${PIZZA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pizza-infra}
RUN=${PIZZA_RUN_DIR:-$ROOT/.run}
TAG=docker
# shellcheck source=deploy/local/lib.sh
. "$HERE/lib.sh"

COMPOSE_VERSION=v5.6.0
COMPOSE_DIR="$CACHE/docker-compose-$COMPOSE_VERSION"
# The Compose plugin's own DOCKER_CONFIG: cli-plugins/docker-compose and nothing the user configured.
COMPOSE_CONFIG="$COMPOSE_DIR/config"
DATA_ROOT="$CACHE/docker"
STANDINS="$ROOT/deploy/standins"

# ---- the engine ---------------------------------------------------------------------------------------
engine_answers() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

server_version() { docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown; }

install_engine() {
  # No init system starts services here; where one would, keep the package from starting a daemon this
  # script did not start (policy-rc.d is Debian's switch for that), and restore the machine afterwards.
  local policy=/usr/sbin/policy-rc.d added=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 0755 "$policy"
    added=1
  fi
  apt_install docker docker.io
  [ -z "$added" ] || as_root rm -f "$policy"
  command -v dockerd >/dev/null || fail docker "command -v dockerd" "the docker.io package installed no dockerd; install Docker Engine by hand"
}

up_engine() {
  if alive docker; then
    wait_until docker 90 "docker info" docker info
    say "docker: engine $(server_version) already running (pid $(cat "$(pidfile docker)"), started by this script)"
    return 0
  fi
  if engine_answers; then
    say "docker: an engine answers ($(server_version)); using it as it is"
    return 0
  fi
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    install_engine
  fi
  mkdir -p "$RUN/docker" "$DATA_ROOT"
  say "docker: starting dockerd (data root $DATA_ROOT, log $RUN/docker/docker.log)"
  # Containers' json logs are capped: a long test run must not fill the disk with Kafka's chatter.
  # `nice`: the engine and all it runs (image builds, containers) yield the CPU to the machine's own
  # work; make test builds the images while the workspace's tests run (deploy/local/test.sh).
  start_bg docker dockerd "$RUN/docker/docker.log" \
    nice -n 10 dockerd --data-root "$DATA_ROOT" --pidfile "$RUN/docker/dockerd.pid" \
    --log-opt max-size=20m --log-opt max-file=2
  wait_until docker 90 "docker info" docker info
  say "docker: engine $(server_version) ready ($(docker info --format '{{.Driver}}, cgroup {{.CgroupVersion}} ({{.CgroupDriver}})' 2>/dev/null))"
}

down_engine() {
  if alive docker; then
    # dockerd stops its containers (10 s each at most) and its containerd before it exits.
    stop_pid docker 60
  elif engine_answers; then
    say "docker: the engine was not started by this script; leaving it running"
  fi
  rm -f "$(pidfile docker)"
}

# ---- Docker Compose -----------------------------------------------------------------------------------
compose_ours() { [ -x "$COMPOSE_CONFIG/cli-plugins/docker-compose" ]; }

install_compose() {
  if docker compose version >/dev/null 2>&1; then
    say "compose: $(docker compose version --short 2>/dev/null) (the machine's)"
    return 0
  fi
  if ! compose_ours; then
    say "compose: building Docker Compose $COMPOSE_VERSION from the Go module proxy (a few minutes, first run only)"
    go_build_pinned compose github.com/docker/compose/v5 "$COMPOSE_VERSION" \
      github.com/docker/compose/v5/cmd "$COMPOSE_DIR" docker-compose \
      "-X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION"
    mkdir -p "$COMPOSE_CONFIG/cli-plugins"
    ln -sfn "$COMPOSE_DIR/bin/docker-compose" "$COMPOSE_CONFIG/cli-plugins/docker-compose"
  fi
  DOCKER_CONFIG=$COMPOSE_CONFIG docker compose version >/dev/null 2>&1 ||
    fail compose "DOCKER_CONFIG=$COMPOSE_CONFIG docker compose version" "delete $COMPOSE_DIR and run '$0 up' again"
  say "compose: $(DOCKER_CONFIG=$COMPOSE_CONFIG docker compose version --short) (built here; eval \"\$($0 env)\")"
}

print_env() {
  if [ "${DOCKER_CONFIG:-}" = "$COMPOSE_CONFIG" ] || ! docker compose version >/dev/null 2>&1; then
    compose_ours || fail compose "docker compose version" "no compose plugin: run '$0 up'"
    printf 'export DOCKER_CONFIG=%q\n' "$COMPOSE_CONFIG"
  fi
}

# ---- stand-in images ----------------------------------------------------------------------------------
# The images deploy/docker-compose.yml and deploy/Dockerfile name that are not built from this
# repository: `image:` lines, and `FROM` lines that are not a stage of the Dockerfile itself.
external_images() {
  local stages
  stages=$(sed -n 's/^FROM .* AS \([a-z0-9-]*\)$/\1/p' "$ROOT/deploy/Dockerfile")
  {
    sed -n 's/^ *image: *\([^ ]*\) *$/\1/p' "$ROOT/deploy/docker-compose.yml"
    sed -n 's/^FROM \([^ ]*\).*/\1/p' "$ROOT/deploy/Dockerfile"
  } | grep -v '^pizza/' | grep -vxF -f <(printf '%s\n' "$stages" scratch) | sort -u
}

image_present() { docker image inspect "$1" >/dev/null 2>&1; }

# The Debian base every other stand-in starts from: the `debian:` tag the Dockerfile's runtime uses.
debian_image() { external_images | grep '^debian:' | head -n 1; }

# context NAME VERSION: a fresh build context with the stand-in's own files (deploy/standins/NAME).
context() {
  local dir="$CACHE/standins/$1-$2"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -a "$STANDINS/$1/." "$dir/"
  echo "$dir"
}

# link_or_copy SRC DEST: hard links where the cache and SRC share a file system (no copy of a toolchain
# or of Kafka's jars), a copy where they do not.
link_or_copy() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }

build_standin() {
  local image=$1 ctx=$2
  shift 2
  say "images: building the stand-in $image"
  run_step images "docker build -t $image $ctx; read the build output" \
    docker build --build-arg "BASE=$(debian_image)" --label "$SOURCE_LABEL=$(standin_source "$image")" \
    "$@" -t "$image" "$ctx"
}

# The label a stand-in carries with what it was built from, where that can change under the same tag.
SOURCE_LABEL=org.pizza.standin.source

# standin_source IMAGE: what the stand-in for IMAGE is built from, when the tag alone does not say it.
# The Collector's build is keyed by its builder manifest (components can be added at the same
# release, as the file_storage extension was): a stand-in built before must be built again.
standin_source() {
  case $1 in
    otel/opentelemetry-collector-contrib:*) basename "$(dirname "$(native_path collector)")" ;;
    *) echo "" ;;
  esac
}

# standin_current IMAGE: the image is present and, if it is a stand-in of ours, built from today's source.
standin_current() {
  image_present "$1" || return 1
  local label
  label=$(docker image inspect -f "{{ index .Config.Labels \"$SOURCE_LABEL\" }}" "$1" 2>/dev/null || true)
  # An image without our label is the real upstream image (pulled or loaded): it is used as it is.
  [ -z "$label" ] || [ "$label" = "<no value>" ] || [ "$label" = "$(standin_source "$1")" ]
}

# The Debian mirror apt uses on this machine, from its sources; the stand-ins install from it too.
debian_mirror() {
  local suffix=${1:-}
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    { grep -oE 'https?://[^ ]+/debian'"$suffix"'/?( |$)' || true; } | head -n 1 | tr -d ' ' | sed 's#/$##'
}

standin_debian() {
  local image=$1 release=${1#debian:}
  release=${release%%-*}
  local codename
  case ${release%%.*} in
    13) codename=trixie ;;
    12) codename=bookworm ;;
    *) fail images "debootstrap for $image" "no Debian codename known for release $release; add it to $0" ;;
  esac
  local tarball="$CACHE/standins/debian-$release-slim.tar" mirror security
  mirror=$(debian_mirror)
  security=$(debian_mirror -security)
  [ -n "$mirror" ] || fail images "read /etc/apt/sources.list*" "no Debian mirror found in apt's sources; this stand-in needs one"
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || apt_install images debootstrap
    local root="$CACHE/standins/debian-$release-rootfs"
    as_root rm -rf "$root"
    say "images: debootstrap --variant=minbase $codename from $mirror (first run only)"
    run_step images "debootstrap --variant=minbase $codename $root $mirror; read its log" \
      as_root debootstrap --variant=minbase "$codename" "$root" "$mirror"
    # What the upstream slim image adds: deb822 sources, no documentation, no apt caches or indexes.
    {
      printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$codename" "$codename"
      [ -z "$security" ] ||
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "$security" "$codename"
    } | as_root tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null
    as_root rm -f "$root/etc/apt/sources.list"
    as_root cp "$STANDINS/debian/dpkg-slim" "$root/etc/dpkg/dpkg.cfg.d/docker"
    as_root cp "$STANDINS/debian/apt-clean" "$root/etc/apt/apt.conf.d/docker-clean"
    as_root sh -c "rm -rf '$root'/usr/share/doc/* '$root'/usr/share/man/* '$root'/usr/share/info/* '$root'/var/cache/apt/*.bin '$root'/var/cache/apt/archives/*.deb '$root'/var/lib/apt/lists/*"
    as_root tar -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    as_root rm -rf "$root"
  fi
  say "images: importing $image from $tarball"
  run_step images "docker import $tarball $image" \
    docker import --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" "$image"
}

standin_rust() {
  local image=$1 version=${1#rust:}
  version=${version%%-*}
  local host toolchain sysroot ctx
  host=$(rustc -vV | sed -n 's/^host: //p')
  toolchain="$version-$host"
  sysroot=$(rustup run "$toolchain" rustc --print sysroot 2>/dev/null) ||
    fail images "rustup run $toolchain rustc" "the stand-in for $image copies the host's Rust $version: rustup toolchain install $version"
  sysroot=$(readlink -f "$sysroot")
  ctx=$(context rust "$version")
  mkdir -p "$ctx/toolchain"
  # The minimal profile the upstream image installs: rustc, cargo, the standard library; no docs.
  local part
  for part in bin lib libexec etc; do
    [ -e "$sysroot/$part" ] && link_or_copy "$sysroot/$part" "$ctx/toolchain/$part"
  done
  link_or_copy "$(command -v rustup)" "$ctx/rustup"
  build_standin "$image" "$ctx" --build-arg "RUST_VERSION=$version" --build-arg "TOOLCHAIN=$toolchain"
}

standin_postgres() {
  local image=$1 version=${1#postgres:} ctx
  version=${version%%-*}
  ctx=$(context postgres "$version")
  build_standin "$image" "$ctx" --build-arg "PG_MAJOR=${version%%.*}"
}

# native_path COMPONENT: the native stack's build of a component (installed if missing).
native_path() {
  "$HERE/infra.sh" install "$1" >&2
  "$HERE/infra.sh" path "$1"
}

# native_version VAR: a version pinned in infra.sh, the one place the native stack's versions live.
native_version() { sed -n "s/^$1=//p" "$HERE/infra.sh"; }

require_native_version() {
  local image=$1 want=$2 have=$3
  [ "$want" = "$have" ] ||
    fail images "stand-in for $image" "the native stack builds $have, the image tag asks for $want: keep deploy/local/infra.sh and the tag equal (deploy/checks does)"
}

standin_kafka() {
  local image=$1 version=${1#apache/kafka:} ctx
  require_native_version "$image" "$version" "$(native_version KAFKA_VERSION)"
  ctx=$(context kafka "$version")
  link_or_copy "$(native_path kafka)" "$ctx/libs"
  rm -f "$ctx/libs/.complete"
  build_standin "$image" "$ctx"
}

standin_collector() {
  local image=$1 version=${1##*:} ctx
  require_native_version "$image" "$version" "$(native_version OTELCOL_VERSION)"
  ctx=$(context otel-collector "$version")
  link_or_copy "$(native_path collector)" "$ctx/otelcol-contrib"
  build_standin "$image" "$ctx"
}

standin_jaeger() {
  local image=$1 version=${1##*:} ctx
  require_native_version "$image" "v$version" "$(native_version JAEGER_VERSION)"
  ctx=$(context jaeger "$version")
  link_or_copy "$(native_path jaeger)" "$ctx/jaeger-linux"
  build_standin "$image" "$ctx"
}

standin_prometheus() {
  local image=$1 version=${1##*:} ctx
  # Prometheus v3.X.Y is Go module version v0.3XX.Y (the module has no /v3 path).
  local major minor patch
  IFS=. read -r major minor patch <<<"${version#v}"
  local tag="v0.$((major * 100 + minor)).$patch" out="$CACHE/prometheus-$version"
  if [ ! -x "$out/bin/prometheus" ]; then
    say "images: building Prometheus $version (module tag $tag) from the Go module proxy (first run only)"
    go_build_pinned images github.com/prometheus/prometheus "$tag" \
      github.com/prometheus/prometheus/cmd/prometheus "$out" prometheus \
      "-X github.com/prometheus/common/version.Version=${version#v} -X github.com/prometheus/common/version.Branch=HEAD"
  fi
  ctx=$(context prometheus "$version")
  link_or_copy "$out/bin/prometheus" "$ctx/prometheus"
  build_standin "$image" "$ctx"
}

build_images() {
  engine_answers || fail images "docker info" "no engine answers: run '$0 up' first"
  local image built=0 present=0 wanted
  # The Debian base first: every other stand-in starts from it.
  if [ $# -gt 0 ]; then wanted=("$@"); else mapfile -t wanted < <(debian_image; external_images | grep -v '^debian:'); fi
  for image in "${wanted[@]}"; do
    if standin_current "$image"; then
      present=$((present + 1))
      continue
    fi
    case $image in
      debian:*) standin_debian "$image" ;;
      rust:*) standin_rust "$image" ;;
      postgres:*) standin_postgres "$image" ;;
      apache/kafka:*) standin_kafka "$image" ;;
      otel/opentelemetry-collector-contrib:*) standin_collector "$image" ;;
      jaegertracing/jaeger:*) standin_jaeger "$image" ;;
      prom/prometheus:*) standin_prometheus "$image" ;;
      *) fail images "stand-in for $image" "no stand-in is known for $image: add one (deploy/standins/README.md), or pull it" ;;
    esac
    image_present "$image" || fail images "docker image inspect $image" "the stand-in build produced no image; read $RUN/images/install.log"
    built=$((built + 1))
  done
  say "images: $built stand-ins built, $present already present"
}

status() {
  local rc=0
  if engine_answers; then
    if alive docker; then
      say "engine: $(server_version), started by this script (pid $(cat "$(pidfile docker)"), data root $DATA_ROOT)"
    else
      say "engine: $(server_version), not started by this script"
    fi
  else
    say "engine: none answers"
    rc=1
  fi
  if docker compose version >/dev/null 2>&1; then
    say "compose: $(docker compose version --short) ($([ "${DOCKER_CONFIG:-}" = "$COMPOSE_CONFIG" ] && echo 'built here' || echo "the machine's"))"
  elif compose_ours; then
    say "compose: $COMPOSE_VERSION built here (eval \"\$($0 env)\" to use it)"
  else
    say "compose: none"
  fi
  return $rc
}

CMD=${1:-}
mkdir -p "$RUN" "$CACHE"
case "$CMD" in
  up)
    up_engine
    install_compose
    ;;
  down) down_engine ;;
  status) status ;;
  env) print_env ;;
  images)
    # The stand-ins' builds need compose nowhere, but the same DOCKER_CONFIG keeps one client setup.
    if compose_ours && ! docker compose version >/dev/null 2>&1; then export DOCKER_CONFIG=$COMPOSE_CONFIG; fi
    shift
    build_images "$@"
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
