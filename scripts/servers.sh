# shellcheck shell=bash
# PostgreSQL and Redis for the tests. Source this file, then call:
#
#   ensure_postgres   # exports DATABASE_URL and AGENTQ_PG_BIN
#   ensure_redis      # exports REDIS_URL and AGENTQ_REDIS_SERVER
#
# Each one uses the server at DATABASE_URL / REDIS_URL (defaults
# postgres://postgres@127.0.0.1:5432/postgres and redis://127.0.0.1:6379) when it answers;
# otherwise it installs the server with apt-get when the binaries are missing, starts a
# private one on a free port under ${AGENTQ_TEST_TMP:-/tmp}, exports its URL and stops it
# when the shell exits. AGENTQ_PG_BIN (the directory holding initdb, pg_ctl and postgres)
# and AGENTQ_REDIS_SERVER (the redis-server executable) are always exported, installing
# the package if need be, for tests that start throwaway servers of their own.
# AGENTQ_PG_OPTIONS adds server options to a private PostgreSQL (`-c name=value …`).
#
# Nothing is skipped silently: when a server can be neither found nor started, the
# function says why on stderr and returns 1.
#
# The servers started here are stopped by an EXIT trap, composed with the trap that was
# in place when it was installed. A script that sets its own EXIT trap afterwards replaces
# it, so it should call `servers_cleanup` from that trap (it is idempotent).

# State of the servers this shell started (empty when none).
_SERVERS_OWNER_PID=""
_SERVERS_PG_DIR=""
_SERVERS_PG_DATA=""
_SERVERS_REDIS_DIR=""
_SERVERS_REDIS_PID=""

_servers_log() { printf 'servers: %s\n' "$*" >&2; }
_servers_err() { printf 'servers: error: %s\n' "$*" >&2; }

_servers_is_root() { [ "$(id -u)" = 0 ]; }

# Runs "$@" with a time limit when `timeout` exists.
_servers_timeout() {
    local secs=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout "$secs" "$@"
    else
        "$@"
    fi
}

# apt-get install -y PACKAGE..., non-interactive; apt-get update only when the first try fails.
_servers_apt_install() {
    local -a sudo=()
    if ! command -v apt-get >/dev/null 2>&1; then
        _servers_err "apt-get is not available to install $*; install it by hand"
        return 1
    fi
    if ! _servers_is_root; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            _servers_err "installing $* needs root, and sudo is not available"
            return 1
        fi
    fi
    _servers_log "installing $* with apt-get"
    if ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; then
        return 0
    fi
    _servers_log "apt-get install failed; running apt-get update and trying again"
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || true
    if ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; then
        return 0
    fi
    _servers_err "apt-get install -y $* failed"
    return 1
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
_servers_free_port() {
    local port i
    if command -v python3 >/dev/null 2>&1 &&
        port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null) && [ -n "$port" ]; then
        printf '%s\n' "$port"
        return 0
    fi
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 40000))
        if ! _servers_tcp_open 127.0.0.1 "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    _servers_err "found no free TCP port"
    return 1
}

# Whether something accepts TCP connections at HOST PORT.
_servers_tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    _servers_timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# Stops the servers this shell started and removes their directories. Idempotent; only the
# shell that started them does anything (not subshells).
servers_cleanup() {
    if [ -n "$_SERVERS_OWNER_PID" ] && [ "$_SERVERS_OWNER_PID" != "${BASHPID:-$$}" ]; then
        return 0
    fi
    if [ -n "$_SERVERS_PG_DATA" ]; then
        if [ -f "$_SERVERS_PG_DATA/postmaster.pid" ]; then
            _servers_pg_as_owner "$AGENTQ_PG_BIN/pg_ctl" stop -D "$_SERVERS_PG_DATA" -m fast -w -t 30 \
                >/dev/null 2>&1 ||
                _servers_pg_as_owner "$AGENTQ_PG_BIN/pg_ctl" stop -D "$_SERVERS_PG_DATA" -m immediate -w -t 30 \
                    >/dev/null 2>&1 || true
        fi
        _SERVERS_PG_DATA=""
    fi
    if [ -n "$_SERVERS_PG_DIR" ]; then
        rm -rf -- "$_SERVERS_PG_DIR" 2>/dev/null || true
        _SERVERS_PG_DIR=""
    fi
    if [ -n "$_SERVERS_REDIS_PID" ]; then
        _servers_kill_wait "$_SERVERS_REDIS_PID"
        _SERVERS_REDIS_PID=""
    fi
    if [ -n "$_SERVERS_REDIS_DIR" ]; then
        rm -rf -- "$_SERVERS_REDIS_DIR" 2>/dev/null || true
        _SERVERS_REDIS_DIR=""
    fi
    return 0
}

# SIGTERM, up to 10 s of grace, then SIGKILL.
_servers_kill_wait() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Installs the EXIT trap once, in front of whatever EXIT trap is already set.
_servers_install_trap() {
    local current old
    _SERVERS_OWNER_PID=${BASHPID:-$$}
    current=$(trap -p EXIT)
    case "$current" in
    *servers_cleanup*) return 0 ;;
    esac
    if [ -z "$current" ]; then
        trap 'servers_cleanup' EXIT
    else
        # `trap -p` prints: trap -- 'COMMAND' EXIT, with COMMAND shell-quoted.
        current=${current#"trap -- "}
        current=${current%" EXIT"}
        eval "old=$current"
        # shellcheck disable=SC2064 # the old command is meant to be expanded now
        trap "servers_cleanup; $old" EXIT
    fi
}

# ---------------------------------------------------------------------------------------
# PostgreSQL

# Whether DIR holds initdb, pg_ctl and postgres.
_servers_pg_bin_ok() {
    [ -n "$1" ] && [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

# Prints the directory holding the PostgreSQL server binaries, if there is one.
_servers_find_pg_bin() {
    local dir found
    if _servers_pg_bin_ok "${AGENTQ_PG_BIN:-}"; then
        printf '%s\n' "$AGENTQ_PG_BIN"
        return 0
    fi
    # Debian and Ubuntu: /usr/lib/postgresql/<version>/bin, newest version first.
    while IFS= read -r dir; do
        if _servers_pg_bin_ok "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    # Elsewhere: pg_config, or initdb on the PATH.
    if command -v pg_config >/dev/null 2>&1 && dir=$(pg_config --bindir 2>/dev/null) &&
        _servers_pg_bin_ok "$dir"; then
        printf '%s\n' "$dir"
        return 0
    fi
    if found=$(command -v initdb 2>/dev/null); then
        dir=$(dirname -- "$(readlink -f -- "$found")")
        if _servers_pg_bin_ok "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    return 1
}

# Exports AGENTQ_PG_BIN, installing PostgreSQL when it is missing.
_servers_ensure_pg_bin() {
    local dir
    if dir=$(_servers_find_pg_bin); then
        export AGENTQ_PG_BIN=$dir
        return 0
    fi
    _servers_log "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found"
    _servers_apt_install postgresql || return 1
    if dir=$(_servers_find_pg_bin); then
        export AGENTQ_PG_BIN=$dir
        return 0
    fi
    _servers_err "PostgreSQL was installed but initdb/pg_ctl/postgres are not under /usr/lib/postgresql/*/bin"
    return 1
}

# A PostgreSQL client tool: from AGENTQ_PG_BIN, else the PATH.
_servers_pg_tool() {
    if [ -n "${AGENTQ_PG_BIN:-}" ] && [ -x "$AGENTQ_PG_BIN/$1" ]; then
        printf '%s\n' "$AGENTQ_PG_BIN/$1"
    else
        command -v "$1" 2>/dev/null
    fi
}

# Probes a PostgreSQL URL. Returns 0 when a query works, 1 when nothing answers, 2 when a
# server answers but the query fails (bad credentials, missing database...).
_servers_pg_probe() {
    local url=$1 isready psql hostport host port rest
    isready=$(_servers_pg_tool pg_isready) || isready=""
    psql=$(_servers_pg_tool psql) || psql=""
    if [ -n "$isready" ]; then
        "$isready" -q -t 3 -d "$url" >/dev/null 2>&1 || return 1
    else
        # postgres://[user[:password]@]host[:port][/db][?params]
        rest=${url#*://}
        rest=${rest%%[/?]*}
        hostport=${rest##*@}
        host=${hostport%:*}
        port=5432
        [ "$host" != "$hostport" ] && port=${hostport##*:}
        host=${host#[}
        host=${host%]}
        [ -n "$host" ] || host=127.0.0.1
        _servers_tcp_open "$host" "$port" || return 1
    fi
    if [ -n "$psql" ]; then
        PGCONNECT_TIMEOUT=5 _servers_timeout 15 "$psql" -X -q -A -t -c 'select 1' "$url" >/dev/null 2>&1 ||
            return 2
    fi
    return 0
}

# Runs "$@" as the user that owns private PostgreSQL data: `postgres` when we are root
# (initdb and postgres refuse to run as root), ourselves otherwise. The working directory
# is the data's parent so that the postgres user can read it.
_servers_pg_as_owner() {
    local dir=${_SERVERS_PG_DIR:-/}
    if ! _servers_is_root; then
        (cd "$dir" && "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd "$dir" && runuser -u postgres -- "$@")
    else
        # shellcheck disable=SC2016 # expanded by the postgres user's sh
        (cd "$dir" && su -s /bin/sh postgres -c 'exec "$0" "$@"' -- "$@")
    fi
}

ensure_postgres() {
    local default_url=postgres://postgres@127.0.0.1:5432/postgres
    local url=${DATABASE_URL:-$default_url} explicit=0 probe=0
    [ -n "${DATABASE_URL:-}" ] && explicit=1

    _servers_ensure_pg_bin || {
        _servers_err "cannot provide PostgreSQL for the tests"
        return 1
    }

    if [ -n "$_SERVERS_PG_DATA" ] && [ "$url" = "${_SERVERS_PG_URL:-}" ]; then
        return 0 # already started by this shell
    fi

    _servers_pg_probe "$url" || probe=$?
    case $probe in
    0)
        export DATABASE_URL=$url
        printf 'PostgreSQL: using the server at %s\n' "$(_servers_redact "$url")"
        return 0
        ;;
    2)
        if [ "$explicit" = 1 ]; then
            _servers_err "the PostgreSQL server at DATABASE_URL=$(_servers_redact "$url") answers but refuses 'select 1' (credentials? database?)"
            return 1
        fi
        _servers_log "the PostgreSQL server at $url refuses 'select 1'; starting a private one"
        ;;
    *)
        _servers_log "no PostgreSQL server answers at $(_servers_redact "$url"); starting a private one"
        ;;
    esac

    _servers_start_postgres || {
        _servers_err "cannot provide PostgreSQL for the tests"
        return 1
    }
}

_servers_start_postgres() {
    local base data port attempt log sock
    if _servers_is_root && ! id postgres >/dev/null 2>&1; then
        _servers_err "running as root, PostgreSQL must run as the 'postgres' system user, which does not exist (the Debian postgresql package creates it)"
        return 1
    fi
    if ! base=$(mktemp -d "${AGENTQ_TEST_TMP:-/tmp}/agentq-test-pg.XXXXXX"); then
        _servers_err "cannot create a directory under ${AGENTQ_TEST_TMP:-/tmp}"
        return 1
    fi
    base=$(cd "$base" && pwd -P)
    _servers_install_trap
    _SERVERS_PG_DIR=$base
    data=$base/data
    log=$base/postgres.log
    if _servers_is_root; then
        # shellcheck disable=SC2015 # either failing is the error
        chmod 755 "$base" && chown postgres: "$base" || {
            _servers_err "cannot hand $base to the postgres user"
            return 1
        }
    fi
    if ! _servers_pg_as_owner "$AGENTQ_PG_BIN/initdb" -D "$data" -U postgres -A trust -E UTF8 \
        --no-locale --no-sync >"$base/initdb.log" 2>&1; then
        _servers_err "initdb failed:"
        sed 's/^/    /' "$base/initdb.log" >&2
        return 1
    fi
    _SERVERS_PG_DATA=$data
    # The Unix socket goes next to the data, unless its path would be too long for one
    # (about 107 bytes): then TCP only.
    sock="-k '$base'"
    [ "${#base}" -gt 80 ] && sock="-c unix_socket_directories=''"

    for attempt in 1 2 3; do
        port=$(_servers_free_port) || return 1
        if _servers_pg_as_owner "$AGENTQ_PG_BIN/pg_ctl" start -D "$data" -l "$log" -w -t 60 \
            -o "-p $port $sock -c listen_addresses=127.0.0.1 -c fsync=off ${AGENTQ_PG_OPTIONS:-}" >/dev/null 2>&1 &&
            _servers_wait_pg "postgres://postgres@127.0.0.1:$port/postgres"; then
            _SERVERS_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
            export DATABASE_URL=$_SERVERS_PG_URL
            printf 'PostgreSQL: started a private server at %s (data in %s)\n' "$DATABASE_URL" "$data"
            return 0
        fi
        _servers_log "PostgreSQL did not start on port $port (attempt $attempt)"
        _servers_pg_as_owner "$AGENTQ_PG_BIN/pg_ctl" stop -D "$data" -m immediate -w >/dev/null 2>&1 || true
    done
    _servers_err "PostgreSQL did not start; its log ($log):"
    tail -n 30 "$log" 2>/dev/null | sed 's/^/    /' >&2
    return 1
}

# Waits up to 30 s for a query to work at URL.
_servers_wait_pg() {
    local i
    for ((i = 0; i < 60; i++)); do
        _servers_pg_probe "$1" && return 0
        sleep 0.5
    done
    return 1
}

# The URL with any password replaced by ***.
_servers_redact() {
    printf '%s\n' "$1" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'
}

# ---------------------------------------------------------------------------------------
# Redis

_servers_find_redis_server() {
    local candidate
    if [ -n "${AGENTQ_REDIS_SERVER:-}" ] && [ -x "$AGENTQ_REDIS_SERVER" ]; then
        printf '%s\n' "$AGENTQ_REDIS_SERVER"
        return 0
    fi
    if candidate=$(command -v redis-server 2>/dev/null); then
        printf '%s\n' "$candidate"
        return 0
    fi
    for candidate in /usr/bin/redis-server /usr/local/bin/redis-server /usr/sbin/redis-server; do
        if [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# Exports AGENTQ_REDIS_SERVER, installing redis-server when it is missing.
_servers_ensure_redis_server() {
    local path
    if path=$(_servers_find_redis_server); then
        export AGENTQ_REDIS_SERVER=$path
        return 0
    fi
    _servers_log "no redis-server found"
    _servers_apt_install redis-server || return 1
    if path=$(_servers_find_redis_server); then
        export AGENTQ_REDIS_SERVER=$path
        return 0
    fi
    _servers_err "redis-server was installed but is not on the PATH or in /usr/bin"
    return 1
}

# Decodes %XX escapes.
_servers_urldecode() {
    local s=${1//\\/\\\\}
    printf '%b' "${s//%/\\x}"
}

# Appends one RESP command ("$@" as its arguments) to the variable _servers_payload.
_servers_resp() {
    local LC_ALL=C arg # ${#arg} counts bytes
    printf -v arg '*%d\r\n' "$#"
    _servers_payload+=$arg
    for arg in "$@"; do
        printf -v arg '$%d\r\n%s\r\n' "${#arg}" "$arg"
        _servers_payload+=$arg
    done
}

# Probes a Redis URL. Returns 0 on PONG, 1 when nothing answers, 2 when a server answers
# something else (NOAUTH, wrong password...).
_servers_redis_probe() {
    local url=$1 reply rest userinfo="" hostport host port user="" pass="" _servers_payload=""
    local -a tls=()
    case "$url" in rediss://*) tls=(--tls) ;; esac
    # redis-cli -u mishandles redis://:password@host (empty user name) in some versions, so
    # URLs with credentials get the raw probe below, which sends AUTH itself (TLS aside).
    if command -v redis-cli >/dev/null 2>&1 && { [ -n "${tls[*]}" ] || [[ "$url" != *@* ]]; }; then
        if ! reply=$(_servers_timeout 5 redis-cli ${tls[@]+"${tls[@]}"} -u "$url" ping 2>/dev/null); then
            # redis-cli exits non-zero when it cannot connect, 0 (and prints the error)
            # when the server answers with an error.
            [ -z "$reply" ] && return 1
        fi
        case "$reply" in
        PONG) return 0 ;;
        "") return 1 ;;
        *) return 2 ;;
        esac
    fi
    case "$url" in
    rediss://*)
        _servers_err "cannot probe $url (TLS) without redis-cli"
        return 1
        ;;
    esac
    # redis://[[user]:password@]host[:port][/db]
    rest=${url#*://}
    rest=${rest%%[/?]*}
    hostport=${rest##*@}
    [ "$hostport" != "$rest" ] && userinfo=${rest%@*}
    host=${hostport%:*}
    port=6379
    [ "$host" != "$hostport" ] && port=${hostport##*:}
    [ -n "$host" ] || host=127.0.0.1
    if [ -n "$userinfo" ]; then
        if [[ "$userinfo" == *:* ]]; then
            user=${userinfo%%:*}
            pass=${userinfo#*:}
        else
            pass=$userinfo
        fi
    fi
    user=$(_servers_urldecode "$user")
    pass=$(_servers_urldecode "$pass")
    if [ -n "$pass" ]; then
        if [ -n "$user" ]; then _servers_resp AUTH "$user" "$pass"; else _servers_resp AUTH "$pass"; fi
    fi
    _servers_resp PING
    # The reply to PING is the last line read (after the one to AUTH, if any).
    # shellcheck disable=SC2016 # expanded by the inner bash
    reply=$(_servers_timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "%s" "$3" >&3
        if [ -n "$4" ]; then IFS= read -r line <&3 || exit 1; fi
        IFS= read -r line <&3 || exit 1
        printf "%s\n" "${line%$'"'"'\r'"'"'}"
    ' _ "$host" "$port" "$_servers_payload" "$pass" 2>/dev/null) || return 1
    case "$reply" in
    +PONG) return 0 ;;
    "") return 1 ;;
    *) return 2 ;;
    esac
}

ensure_redis() {
    local default_url=redis://127.0.0.1:6379
    local url=${REDIS_URL:-$default_url} explicit=0 probe=0
    [ -n "${REDIS_URL:-}" ] && explicit=1

    _servers_ensure_redis_server || {
        _servers_err "cannot provide Redis for the tests"
        return 1
    }

    if [ -n "$_SERVERS_REDIS_PID" ] && [ "$url" = "${_SERVERS_REDIS_URL:-}" ]; then
        return 0 # already started by this shell
    fi

    _servers_redis_probe "$url" || probe=$?
    case $probe in
    0)
        export REDIS_URL=$url
        printf 'Redis: using the server at %s\n' "$(_servers_redact "$url")"
        return 0
        ;;
    2)
        if [ "$explicit" = 1 ]; then
            _servers_err "the Redis server at REDIS_URL=$(_servers_redact "$url") answers but not PONG to PING (password?)"
            return 1
        fi
        _servers_log "the Redis server at $url does not answer PING with PONG; starting a private one"
        ;;
    *)
        _servers_log "no Redis server answers at $(_servers_redact "$url"); starting a private one"
        ;;
    esac

    _servers_start_redis || {
        _servers_err "cannot provide Redis for the tests"
        return 1
    }
}

_servers_start_redis() {
    local base port attempt log pid i
    if ! base=$(mktemp -d "${AGENTQ_TEST_TMP:-/tmp}/agentq-test-redis.XXXXXX"); then
        _servers_err "cannot create a directory under ${AGENTQ_TEST_TMP:-/tmp}"
        return 1
    fi
    base=$(cd "$base" && pwd -P)
    _servers_install_trap
    _SERVERS_REDIS_DIR=$base
    log=$base/redis.log
    for attempt in 1 2 3; do
        port=$(_servers_free_port) || return 1
        "$AGENTQ_REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --dir "$base" </dev/null >>"$log" 2>&1 &
        pid=$!
        _SERVERS_REDIS_PID=$pid
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            if _servers_redis_probe "redis://127.0.0.1:$port"; then
                _SERVERS_REDIS_URL="redis://127.0.0.1:$port"
                export REDIS_URL=$_SERVERS_REDIS_URL
                printf 'Redis: started a private server at %s (pid %s)\n' "$REDIS_URL" "$pid"
                return 0
            fi
            sleep 0.5
        done
        _servers_log "Redis did not start on port $port (attempt $attempt)"
        _servers_kill_wait "$pid"
        _SERVERS_REDIS_PID=""
    done
    _servers_err "Redis did not start; its log ($log):"
    tail -n 30 "$log" 2>/dev/null | sed 's/^/    /' >&2
    return 1
}
