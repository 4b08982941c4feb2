#!/usr/bin/env bash
# The SDKs against the real server: sdk/python's tests (unittest, in a virtualenv at
# target/sdk-venv with the SDK installed from sdk/python, its one dependency pinned) and
# sdk/typescript's (node --test, after npm ci from its committed lock file), each starting
# the debug binary target/debug/agentq (built by `cargo build`; nothing is built here): each
# suite twice, on fresh SQLite databases and on fresh PostgreSQL databases with Redis
# delivery (the servers at DATABASE_URL and REDIS_URL, or scripts/servers.sh's own).
#
# Then a client generated from openapi/openapi.json by openapi-python-client (pinned in
# tests/clients/requirements.txt) on SQLite; the TypeScript suite holds the same check for
# openapi-typescript and openapi-fetch.
#
# The Python suite runs once more, on SQLite, under the oldest Python the SDK supports (3.10):
# AGENTQ_SDK_PYTHON_MIN names that interpreter; otherwise python3.10 on PATH or pyenv's. Where
# none is found that pass fails, saying so (AGENTQ_SDK_PYTHON_MIN=none leaves it out on
# purpose).
#
# Installs what is missing: python3-venv and Node.js/npm (apt-get); the packages need PyPI
# and the npm registry on the first run. AGENTQ_SDK_PYTHON picks the interpreter (python3).
# Usage: scripts/sdk-test.sh   (exit status 0 when every test passed; one `test result:`
# line per SDK)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/servers.sh
source scripts/servers.sh

python=${AGENTQ_SDK_PYTHON:-python3}
venv=target/sdk-venv
export AGENTQ_BIN=$PWD/target/debug/agentq
say() { printf 'sdk-test: %s\n' "$*"; }
status=0
ensure_postgres
ensure_redis
trap servers_cleanup EXIT

[[ -x $AGENTQ_BIN ]] || {
    say "error: $AGENTQ_BIN is missing: run cargo build first"
    echo "test result: FAILED. 0 passed; 1 failed (scripts/sdk-test.sh)"
    exit 1
}

# --- Python
# runs sdk/python's suite under the interpreter $python in the virtualenv $venv
python_tests() {
    if [[ ! -x $venv/bin/python ]]; then
        if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
            _servers_apt_install python3-venv || return 1
        fi
        "$python" -m venv "$venv" || return 1
    fi
    # reinstalled every run, from a copy, so the source tree gets no build files
    local src
    src=$(mktemp -d)
    cp -r sdk/python/. "$src"
    "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$src" &&
        "$venv/bin/pip" install -q --disable-pip-version-check "$src" || {
        rm -rf "$src"
        return 1
    }
    rm -rf "$src"
    (cd sdk/python/tests && "$PWD/../../../$venv/bin/python" -m unittest -v 2>&1)
}
out=$(mktemp)
# one `test result:` line per suite and backend
summarise() {
    local what=$1 ran=$2 failed=$3
    if [[ -z $ran ]]; then
        echo "test result: FAILED. 0 passed; 1 failed ($what did not run)"
        status=1
    elif [[ $failed -gt 0 ]]; then
        echo "test result: FAILED. $((ran - failed)) passed; $failed failed ($what)"
        status=1
    else
        echo "test result: ok. $ran passed; 0 failed ($what)"
    fi
}
# runs the unittest suite function $2 and says its `test result:` line as $1
unittest_pass() {
    local pass_status=0 ran failed
    "$2" >"$out" 2>&1 || pass_status=1
    cat "$out"
    ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$out" | tail -1)
    failed=$(grep -cE '^(FAIL|ERROR):' "$out" || true)
    [[ $pass_status -ne 0 && $failed -eq 0 ]] && failed=1
    summarise "$1" "$ran" "$failed"
}
backends=("sqlite:db" "postgres:redis")
for backend in "${backends[@]}"; do
    export AGENTQ_SDK_DB=${backend%%:*} AGENTQ_SDK_DELIVERY=${backend##*:}
    say "sdk/python on $AGENTQ_SDK_DB, $AGENTQ_SDK_DELIVERY delivery"
    unittest_pass "sdk/python, $AGENTQ_SDK_DB" python_tests
done
# the oldest Python the SDK supports (pyproject.toml: requires-python >= 3.10)
oldest_python() {
    if [[ -n ${AGENTQ_SDK_PYTHON_MIN:-} ]]; then
        echo "$AGENTQ_SDK_PYTHON_MIN"
        return
    fi
    local root=${PYENV_ROOT:-$HOME/.pyenv} candidate
    command -v pyenv >/dev/null && root=$(pyenv root)
    # a pyenv shim on PATH may not run: take the first that answers as 3.10
    for candidate in $(command -v python3.10) $(ls -d "$root"/versions/3.10*/bin/python3.10 2>/dev/null | sort -rV); do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
}
python_min=$(oldest_python || true)
if [[ $python_min == none ]]; then
    say "left out on purpose (AGENTQ_SDK_PYTHON_MIN=none): sdk/python under Python 3.10"
elif [[ -z $python_min ]]; then
    say "error: no Python 3.10 found (python3.10 on PATH or pyenv's); set AGENTQ_SDK_PYTHON_MIN to one, or to none to leave this pass out"
    echo "test result: FAILED. 0 passed; 1 failed (sdk/python under Python 3.10: no interpreter)"
    status=1
else
    export AGENTQ_SDK_DB=sqlite AGENTQ_SDK_DELIVERY=db
    say "sdk/python on sqlite under $("$python_min" --version 2>&1) ($python_min)"
    python=$python_min venv=target/sdk-venv-min unittest_pass "sdk/python, sqlite, $("$python_min" --version 2>&1)" python_tests
fi

# --- TypeScript
typescript_tests() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        say "installing Node.js and npm (apt-get)"
        _servers_apt_install nodejs npm || return 1
    fi
    # the dev tools (TypeScript, openapi-typescript) at the versions the lock file pins
    local stamp=sdk/typescript/node_modules/.agentq-lock
    if ! cmp -s sdk/typescript/package-lock.json "$stamp" 2>/dev/null; then
        (cd sdk/typescript && npm ci --no-audit --no-fund --loglevel=error) || return 1
        cp sdk/typescript/package-lock.json "$stamp"
    fi
    (cd sdk/typescript && npm run --silent typecheck && timeout 600 npm test 2>&1)
}
for backend in "${backends[@]}"; do
    export AGENTQ_SDK_DB=${backend%%:*} AGENTQ_SDK_DELIVERY=${backend##*:}
    say "sdk/typescript on $AGENTQ_SDK_DB, $AGENTQ_SDK_DELIVERY delivery"
    pass_status=0
    typescript_tests >"$out" 2>&1 || pass_status=1
    cat "$out"
    passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -1)
    failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -1)
    failed=${failed:-0}
    [[ $pass_status -ne 0 && $failed -eq 0 ]] && failed=1
    summarise "sdk/typescript, $AGENTQ_SDK_DB" "${passed:+$((passed + failed))}" "$failed"
done
# --- A Python client generated from openapi/openapi.json (openapi-python-client, pinned
# in tests/clients/requirements.txt, in its own virtualenv at target/gen-venv), on SQLite
generated_python_tests() {
    local gen=target/gen-venv
    if [[ ! -x $gen/bin/python ]]; then
        "$python" -m venv "$gen" || return 1
    fi
    local stamp=$gen/.agentq-requirements
    if ! cmp -s tests/clients/requirements.txt "$stamp" 2>/dev/null; then
        "$gen/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt || return 1
        cp tests/clients/requirements.txt "$stamp"
    fi
    rm -rf target/gen-python && mkdir -p target/gen-python
    (cd target/gen-python && PATH=$PWD/../gen-venv/bin:$PATH ../gen-venv/bin/openapi-python-client \
        generate --path ../../openapi/openapi.json --meta none --output-path agentq_api >/dev/null) || return 1
    [[ -d target/gen-python/agentq_api ]] || return 1
    PYTHONPATH=target/gen-python:sdk/python/tests "$gen/bin/python" tests/clients/generated_python.py 2>&1
}
export AGENTQ_SDK_DB=sqlite AGENTQ_SDK_DELIVERY=db
say "a Python client generated from openapi/openapi.json"
unittest_pass "generated Python client, sqlite" generated_python_tests

rm -f "$out"
exit "$status"
