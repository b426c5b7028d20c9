#!/bin/bash
# The whole test suite, from a fresh machine: installs what it needs, then
# runs format and lint checks, unit and integration tests (as root: they
# build real namespaces and mounts), and the system tests on a real systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/ci.sh: run as root (the tests build real namespaces, mounts and a systemd testbed)" >&2
    exit 2
fi

# Debian packages the tests use; install only what is missing.
need=()
for p in passwd debootstrap systemd-container dbus iproute2 util-linux curl openssh-client dropbear-bin lighttpd wrk qemu-system-x86 e2fsprogs jq lintian python3-prometheus-client; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Toolchain components for the checks.
for c in rustfmt clippy; do
    if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$c"
    fi
done

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
CI="${CI:-true}" cargo test --all-targets --quiet 2>&1
echo "== system tests: berth on a real systemd (testbed 1)"
bash tests/system/run.sh
echo "== the README's administrator guide, run as written (Debian package on testbed 1)"
bash tests/system/guide.sh
DEB=$(ls -t target/debian/berth_*.deb | head -n1)
echo "== lintian: the package as Debian checks it (no errors)"
lintian --fail-on error "$DEB"
echo "== production parity: the package in a qemu VM on cgroup v2 (testbed 2)"
bash tests/vm/run.sh --deb "$DEB"
