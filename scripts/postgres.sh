#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks: Debian's server (installed when
# missing), its own folder, a free port on 127.0.0.1, run by a non-root user (initdb refuses root).
#
#   scripts/postgres.sh start DIR   # prints the postgres:// URL of database "presence"
#   scripts/postgres.sh stop DIR
#   scripts/postgres.sh restart DIR # stop and start on the same port (a database restart under load)
set -euo pipefail
command_name=${1:?usage: postgres.sh start|stop|restart DIR}
folder=${2:?usage: postgres.sh start|stop|restart DIR}

find_bin() {
    local candidate
    for candidate in /usr/lib/postgresql/*/bin; do
        [ -x "$candidate/pg_ctl" ] && { echo "$candidate"; return; }
    done
}

bin=$(find_bin || true)
if [ -z "$bin" ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(find_bin)
fi

# The cluster belongs to an unprivileged user; as root, run its programs as that user.
run_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        id presence-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin presence-pg
        runuser -u presence-pg -- "$@"
    else
        "$@"
    fi
}

start() {
    mkdir -p "$folder"
    [ "$(id -u)" = 0 ] && { id presence-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin presence-pg; chown presence-pg "$folder"; }
    if [ ! -f "$folder/data/PG_VERSION" ]; then
        run_as_owner "$bin/initdb" --pgdata="$folder/data" --username=presence --auth=trust --encoding=UTF8 --no-locale >"$folder/initdb.log" 2>&1 \
            || { cat "$folder/initdb.log" >&2; exit 1; }
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' >"$folder/port"
        chmod a+r "$folder/port"
    fi
    local port
    port=$(cat "$folder/port")
    if run_as_owner "$bin/pg_ctl" --pgdata="$folder/data" status >/dev/null 2>&1; then
        echo "postgres://presence@127.0.0.1:$port/presence?sslmode=disable"
        return
    fi
    run_as_owner "$bin/pg_ctl" --pgdata="$folder/data" --log="$folder/data/server.log" --wait --timeout=60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$folder/data -c max_connections=200 -c fsync=on" \
        start >/dev/null
    if ! run_as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U presence -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'presence'" | grep -q 1; then
        run_as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U presence presence
    fi
    echo "postgres://presence@127.0.0.1:$port/presence?sslmode=disable"
}

stop() {
    [ -f "$folder/data/postmaster.pid" ] || return 0
    run_as_owner "$bin/pg_ctl" --pgdata="$folder/data" --mode=fast --wait stop >/dev/null
}

case "$command_name" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    *) echo "usage: postgres.sh start|stop|restart DIR" >&2; exit 2 ;;
esac
