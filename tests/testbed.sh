#!/usr/bin/env bash
# The real-server test bed: offline-built images, two SSH "servers" that reach the machine's Docker
# engine through their own /var/run/docker.sock, and the facts tests need in target/testbed/env.
# The servers share the machine's network stack (sshd on its own loopback port each), so like a real
# Docker host they reach the containers' bridge addresses and the ports containers publish.
#
#   tests/testbed.sh up      build missing images (cached by recipe hash), start the servers
#   tests/testbed.sh down    remove everything the test bed and the tests created: containers
#                            (with their anonymous volumes), volumes, networks, and /srv/berth
#
# Images are never pulled: the base is a Debian rootfs made by mmdebstrap from Debian's packages and
# `docker import`ed; the others are built FROM it with the legacy builder (local images only).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=tests/images
STATE=$PWD/target/testbed
LABEL=berth.testbed=1
SERVERS=(berth-test-server-1 berth-test-server-2)
# Environments live under this directory on a server. The Docker engine resolves bind-mount paths on
# the machine, so the servers see the machine's directory at the same path.
DATA=/srv/berth

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

require_docker() {
  if ! docker info >/dev/null 2>&1; then
    echo "error: the Docker engine is not reachable (docker info failed). The test bed needs it:" \
         "start dockerd (e.g. 'systemctl start docker' or 'dockerd &') and run again." >&2
    exit 1
  fi
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

build_images() {
  BASE_TAG=berth-test/base:$(hash_of "$IMAGES/base.packages")
  SERVER_TAG=berth-test/server:$(hash_of "$IMAGES/base.packages" "$IMAGES/server.Dockerfile" "$IMAGES/server-entrypoint.sh")
  POSTGRES_TAG=berth-test/postgres:$(hash_of "$IMAGES/base.packages" "$IMAGES/postgres.Dockerfile" "$IMAGES/postgres-entrypoint.sh")
  local standin
  mapfile -t standin < <(find "$IMAGES/odoo-standin" -type f | LC_ALL=C sort)
  ODOO_TAG=berth-test/odoo:$(hash_of "$IMAGES/base.packages" "$IMAGES/odoo.Dockerfile" "${standin[@]}")
  if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    if ! command -v mmdebstrap >/dev/null; then
      say "installing mmdebstrap (Debian package) to build the base image"
      apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null
    fi
    say "building $BASE_TAG with mmdebstrap (Debian bookworm; a few minutes, once)"
    local tarball
    tarball=$(mktemp --suffix=.tar)
    mmdebstrap --quiet --variant=minbase --include="$(paste -sd, "$IMAGES/base.packages")" \
      bookworm "$tarball" http://deb.debian.org/debian
    docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$tarball" "$BASE_TAG" >/dev/null
    rm -f "$tarball"
  fi
  for pair in "server:$SERVER_TAG" "postgres:$POSTGRES_TAG" "odoo:$ODOO_TAG"; do
    local name=${pair%%:*} tag=${pair#*:}
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
      say "building $tag"
      DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE=$BASE_TAG" -f "$IMAGES/$name.Dockerfile" \
        -t "$tag" "$IMAGES" >/dev/null
    fi
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_ssh() {
  local port=$1
  for _ in $(seq 1 100); do
    if banner=$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 7 <&3" 2>/dev/null) \
       && [ "$banner" = "SSH-2.0" ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: sshd on 127.0.0.1:$port did not answer" >&2
  exit 1
}

down() {
  require_docker
  local pid
  for pid in "$STATE"/ftp*/pid; do
    [ -f "$pid" ] || continue
    # The daemon may have stopped already; its pid file is all that is left to clean.
    kill "$(cat "$pid")" 2>/dev/null || true
    rm -f "$pid"
  done
  local ids label since
  since=$(up_since)
  # The test bed's own objects, and those tests created through Berth (labelled berth.scope);
  # containers with the anonymous volumes their images declare (`-v`).
  for label in "$LABEL" berth.scope; do
    ids=$(docker ps -aq --filter "label=$label")
    [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
    ids=$(docker volume ls -q --filter "label=$label")
    [ -z "$ids" ] || docker volume rm -f $ids >/dev/null
    for net in $(docker network ls -q --filter "label=$label"); do docker network rm "$net" >/dev/null; done
  done
  remove_anonymous_volumes "$since"
  # What environments left on the servers: their directories, bind-mounted from the machine.
  rm -rf "$DATA"
  rm -f "$STATE/up-since"
}

# When the test bed came up (seconds since the epoch): recorded by `up`, or else the servers'
# creation; empty when neither is known.
up_since() {
  if [ -f "$STATE/up-since" ]; then
    cat "$STATE/up-since"
    return
  fi
  local created
  created=$(docker inspect -f '{{.Created}}' "${SERVERS[0]}" 2>/dev/null) || return 0
  date -d "$created" +%s
}

# Anonymous volumes (no name given, no label) created since $1 that no container uses any more:
# those of containers the tests replaced or removed without their volumes. Nothing else on the
# machine's Docker engine is touched.
remove_anonymous_volumes() {
  local since=$1 volume created labels
  [ -n "$since" ] || return 0
  for volume in $(docker volume ls -q --filter dangling=true); do
    [[ $volume =~ ^[0-9a-f]{64}$ ]] || continue
    # A volume gone or taken into use meanwhile is simply left alone.
    read -r created labels < <(docker volume inspect -f '{{.CreatedAt}} {{len .Labels}}' "$volume" 2>/dev/null) \
      || continue
    [ "${labels:-0}" = 0 ] || continue
    [ "$(date -d "$created" +%s)" -ge "$since" ] || continue
    docker volume rm "$volume" >/dev/null 2>&1 || true
  done
}

# s3s-fs, a real S3 server, built from crates.io once into target/tools.
S3S_FS=$PWD/target/tools/bin/s3s-fs

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $what on 127.0.0.1:$port did not answer" >&2
  exit 1
}

# The storage targets backups are tested against, on loopback: S3 (s3s-fs, in a container), FTP
# and FTPS (pure-ftpd). SFTP is the test servers' own OpenSSH.
storage() {
  if [ ! -x "$S3S_FS" ]; then
    say "installing s3s-fs 0.14.1 (a real S3 server) into target/tools; a few minutes, once"
    cargo install --locked --quiet s3s-fs --version 0.14.1 --features binary --root "$PWD/target/tools" >&2
  fi
  local s3_port
  s3_port=$(free_port)
  docker run -d --name berth-test-s3 --label "$LABEL" --network host --tmpfs /data \
    -v "$S3S_FS:/usr/local/bin/s3s-fs:ro" --entrypoint sh "$BASE_TAG" -c \
    "mkdir -p /data/berth-backups && exec s3s-fs --host 127.0.0.1 --port $s3_port --access-key berth-test-ak --secret-key berth-test-sk /data" >/dev/null
  wait_for_port "$s3_port" "s3s-fs"
  echo "BERTH_TEST_S3=http://127.0.0.1:$s3_port"
  echo "BERTH_TEST_S3_BUCKET=berth-backups"
  echo "BERTH_TEST_S3_ACCESS_KEY=berth-test-ak"
  echo "BERTH_TEST_S3_SECRET_KEY=berth-test-sk"
  # pure-ftpd cannot start in a container here (it needs capabilities Docker may not grant), so it
  # runs on the machine, as the test bed's own daemons with one virtual user each, on loopback: one
  # speaking plain FTP, one refusing anything but TLS (explicit FTPS, on control and data
  # connections) with a certificate of the test bed's own CA.
  local missing=()
  command -v pure-ftpd >/dev/null || missing+=(pure-ftpd)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian packages) for the FTP storage tests"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  ftp_server ftp 30000:30019
  tls_certificates "$STATE/tls"
  ftp_server ftps 30020:30039 -Y 3 -2 "$STATE/tls/server.pem,$STATE/tls/server.key"
  # One whose PASV answers name another host (a private address nothing listens on): the data
  # connection must still go to the server the control connection reached.
  PASV_IP=10.255.255.1 ftp_server ftpliar 30040:30049
  echo "BERTH_TEST_FTPS_CA=$STATE/tls/ca.pem"
}

# A CA and a certificate it signs for 127.0.0.1, in $1.
tls_certificates() {
  local dir=$1
  rm -rf "$dir" && mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=Berth test bed CA" -addext basicConstraints=critical,CA:TRUE \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    > "$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 30 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  chmod 0600 "$dir"/*.key
}

# One pure-ftpd named $1 (its variables are BERTH_TEST_<NAME>*), passive ports $2, more flags after;
# its PASV answers name $PASV_IP (127.0.0.1 unless set).
ftp_server() {
  local name=$1 passive=$2 port
  shift 2
  local dir="$STATE/$name" var
  var="BERTH_TEST_$(echo "$name" | tr a-z A-Z)"
  rm -rf "$dir" && mkdir -p "$dir/root"
  chown nobody:nogroup "$dir/root"
  printf 'berth-test-ftp\nberth-test-ftp\n' \
    | pure-pw useradd berth -u nobody -g nogroup -d "$dir/root" -f "$dir/passwd" >/dev/null
  # pure-pw tunes Argon2 to take seconds on this machine, at every login; a SHA-512 crypt hash
  # keeps the test password's logins fast and their time steady.
  local hash
  hash=$(openssl passwd -6 berth-test-ftp)
  sed -i "s|^berth:[^:]*:|berth:$hash:|" "$dir/passwd"
  pure-pw mkdb "$dir/pdb" -f "$dir/passwd"
  port=$(free_port)
  pure-ftpd -S "127.0.0.1,$port" -l "puredb:$dir/pdb" -E -p "$passive" -P "${PASV_IP:-127.0.0.1}" -B \
    -g "$dir/pid" "$@"
  wait_for_port "$port" "pure-ftpd ($name)"
  echo "$var=127.0.0.1:$port"
  echo "${var}_USER=berth"
  echo "${var}_PASSWORD=berth-test-ftp"
}

up() {
  require_docker
  build_images
  down
  mkdir -p "$STATE" "$DATA"
  date +%s > "$STATE/up-since"
  [ -f "$STATE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C berth-testbed -f "$STATE/id_ed25519"
  cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
  {
    echo "BERTH_TEST_SSH_KEY=$STATE/id_ed25519"
    echo "BERTH_TEST_POSTGRES_IMAGE=$POSTGRES_TAG"
    echo "BERTH_TEST_ODOO_IMAGE=$ODOO_TAG"
  } > "$STATE/env.tmp"
  local i=0
  for name in "${SERVERS[@]}"; do
    i=$((i + 1))
    local port
    port=$(free_port)
    docker run -d --name "$name" --label "$LABEL" --network host -e "SSH_PORT=$port" \
      -v /var/run/docker.sock:/var/run/docker.sock -v "$DATA:$DATA" \
      -v "$STATE/authorized_keys:/berth/authorized_keys:ro" "$SERVER_TAG" >/dev/null
    wait_for_ssh "$port"
    echo "BERTH_TEST_SERVER_$i=127.0.0.1:$port"
    echo "BERTH_TEST_SERVER_${i}_CONTAINER=$name"
  done >> "$STATE/env.tmp"
  storage >> "$STATE/env.tmp"
  mv "$STATE/env.tmp" "$STATE/env"
  say "test bed up: $STATE/env"
}

case "${1:-}" in
  up) up ;;
  down) down; rm -f "$STATE/env" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
