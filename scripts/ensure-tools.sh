#!/usr/bin/env bash
# Make sure the system tools the deployment tests use are here: HAProxy (the rollout check's
# stand-in for a Kubernetes Service; installed from apt when missing, which needs root) and kubectl
# (`kubectl kustomize` renders the manifests; not in Debian's archive, so it must be provided).
set -euo pipefail

status=0
if command -v haproxy >/dev/null 2>&1; then
    echo "ensure-tools: haproxy is installed ($(haproxy -v 2>/dev/null | head -n 1))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: installing haproxy"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends haproxy >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends haproxy >/dev/null
    fi
    haproxy -v | head -n 1
else
    echo "ensure-tools: haproxy is missing; install it (apt-get install haproxy) as root" >&2
    status=1
fi

if command -v kubectl >/dev/null 2>&1; then
    echo "ensure-tools: kubectl is installed ($(kubectl version --client 2>/dev/null | head -n 1))"
else
    echo "ensure-tools: kubectl is missing: the manifest tests need \`kubectl kustomize\`" >&2
    status=1
fi
exit "$status"
