#!/bin/sh
# Start redis-server with the project's ACL users (docs/operations/access.md, "Redis users by role").
#
#   sh start.sh [redis-server flags...]
#
# Renders users.acl (REDIS_ACL_TEMPLATE, default /etc/redis/users.acl: the committed file, in
# which nobody can log in) into REDIS_ACL_FILE (default /data/users.acl, mode 600) with each
# user's password from the environment, stored as its SHA-256 (no password in clear on disk):
#
#   admin       REDIS_PASSWORD             (people: ACL, CONFIG... no process of the project)
#   worker      REDIS_WORKER_PASSWORD      (the gateway's MetricsClient)
#   aggregator  REDIS_AGGREGATOR_PASSWORD  (python -m aggregator)
#   operator    REDIS_OPERATOR_PASSWORD    (breaker open|close|reset)
#   reader      REDIS_READER_PASSWORD      (inspect, breaker status)
#
# A user whose variable is unset or empty keeps no password: it cannot log in (said on stderr),
# unless the variable is one of REDIS_ACL_REQUIRED (names separated by spaces, default none):
# then nothing starts (exit 2, one line on stderr naming it). compose.acl.yml requires admin's,
# the workers' and the aggregators'.
# Passwords must be URL-safe (0-9 A-Z a-z . _ ~ -: they go into redis:// URLs unescaped), e.g.
# `openssl rand -hex 24`. Then redis-server runs with --aclfile and the flags given, through the
# redis image's entrypoint when there is one (it drops root for the redis user).
set -eu

template=${REDIS_ACL_TEMPLATE:-/etc/redis/users.acl}
required=" ${REDIS_ACL_REQUIRED:-} "
rendered=${REDIS_ACL_FILE:-/data/users.acl}
script=""
for pair in admin:REDIS_PASSWORD worker:REDIS_WORKER_PASSWORD \
    aggregator:REDIS_AGGREGATOR_PASSWORD operator:REDIS_OPERATOR_PASSWORD \
    reader:REDIS_READER_PASSWORD; do
    user=${pair%%:*}
    variable=${pair#*:}
    eval "password=\${$variable:-}"
    case $password in
        "")
            case $required in
                *" $variable "*)
                    echo "start.sh: $variable is empty or unset: refusing to start without user $user" >&2
                    exit 2
                    ;;
            esac
            echo "start.sh: $variable is not set: user $user cannot log in" >&2
            continue
            ;;
        *[!0-9A-Za-z._~-]*)
            echo "start.sh: $variable must be URL-safe (0-9 A-Z a-z . _ ~ -)" >&2
            exit 2
            ;;
    esac
    digest=$(printf '%s' "$password" | sha256sum | cut -c1-64)
    grep -q "^user $user " "$template" || {
        echo "start.sh: $template has no user $user" >&2
        exit 2
    }
    script="$script/^user $user /s/\$/ #$digest/;"
done

umask 077
sed -e "$script" "$template" >"$rendered"
if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    exec docker-entrypoint.sh redis-server --aclfile "$rendered" "$@"
fi
exec redis-server --aclfile "$rendered" "$@"
