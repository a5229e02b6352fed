#!/usr/bin/env bash
# Make sure the system tools the deployment tests and benchmarks use are here: HAProxy (the
# rollout check's stand-in for a Kubernetes Service), wrk and h2load (the benchmarks' load
# generators), all installed from apt when missing (which needs root), kubectl
# (`kubectl kustomize` renders the manifests; not in Debian's archive, so it must be provided) and
# promtool (checks and unit-tests the alert rules; only the binary is taken from Debian's
# `prometheus` package: installing the package would start a Prometheus server on port 9090, the
# service's default admin port).
set -euo pipefail
# (`sed -n 1p`, not `head -n 1`: head exits early, and the tool writing the rest of its version
# text then dies of SIGPIPE, which pipefail turns into a failure of this script.)

status=0
# A tool from Debian's archive: installed (as root) when its command is missing.
apt_tool() { # command package version-command...
    local command=$1 package=$2
    shift 2
    if command -v "$command" >/dev/null 2>&1; then
        echo "ensure-tools: $command is installed ($("$@" 2>&1 | sed -n 1p))"
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "ensure-tools: installing $command (Debian package $package)"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q --no-install-recommends "$package" >/dev/null; then
            apt-get update -q >/dev/null
            apt-get install -y -q --no-install-recommends "$package" >/dev/null
        fi
        # (`|| true`: `wrk --version` prints its version and exits 1.)
        { "$@" 2>&1 || true; } | sed -n 1p
    else
        echo "ensure-tools: $command is missing; install it (apt-get install $package) as root" >&2
        status=1
    fi
}

apt_tool haproxy haproxy haproxy -v
# The load generators of the benchmarks (`make bench`): wrk for HTTP, h2load for gRPC.
apt_tool wrk wrk wrk --version
apt_tool h2load nghttp2-client h2load --version

if command -v kubectl >/dev/null 2>&1; then
    echo "ensure-tools: kubectl is installed ($(kubectl version --client 2>/dev/null | sed -n 1p))"
else
    echo "ensure-tools: kubectl is missing: the manifest tests need \`kubectl kustomize\`" >&2
    status=1
fi

if command -v promtool >/dev/null 2>&1; then
    echo "ensure-tools: promtool is installed ($(promtool --version 2>&1 | sed -n 1p))"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-tools: installing promtool (from the prometheus package, binary only)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # (As root, apt-get download warns that it cannot sandbox the download into this directory.)
    if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
        apt-get update -q >/dev/null
        (cd "$work" && apt-get download -q prometheus >/dev/null)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
    install -m 755 "$work/root/usr/bin/promtool" /usr/local/bin/promtool
    promtool --version 2>&1 | sed -n 1p
else
    echo "ensure-tools: promtool is missing: the alert rule tests need it (as root, this script" \
        "extracts it from Debian's prometheus package)" >&2
    status=1
fi
exit "$status"
