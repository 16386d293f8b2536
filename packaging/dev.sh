#!/usr/bin/env bash
# Sidecall developer entry point for Debian 12 (and derivatives).
#
#   packaging/dev.sh run [ARGS…]     install what is missing, build, open the Sidecall app
#   packaging/dev.sh test            install what is missing, run every test
#   packaging/dev.sh server [ARGS…]  build and run the standalone server (server packages only)
#   packaging/dev.sh deb             build the Debian package (release) into target/deb/
#   packaging/dev.sh deps            only install the system packages
#
# System packages are installed with apt-get (through sudo when not root).
set -euo pipefail

cd "$(dirname "$0")/.."

# What building the server needs from Debian (a C compiler for the bundled SQLite and ring).
SERVER_PACKAGES=(build-essential pkg-config ca-certificates)
# What the desktop app and command line need besides (cpal links ALSA), and what the window
# needs to run. libclang-dev: nokhwa (camera) generates its V4L2 bindings with bindgen.
# nasm: OpenH264's SIMD code (without it the encoder silently runs ~3x slower).
DESKTOP_PACKAGES=(libasound2-dev nasm libclang-dev)
RUN_PACKAGES=(libxkbcommon-x11-0 libgl1 libegl1 libgl1-mesa-dri)
# The tests also talk to a real browser (Chromium, headless) to check WebRTC interoperability,
# build NATs in network namespaces (iproute2, iptables) and relay through coturn.
# Notifications are tested on Debian's dunst, on a D-Bus session bus and Xvfb of the test's own.
# The package test installs the .deb into a debootstrap chroot of Debian 12.
TEST_PACKAGES=(chromium iptables iproute2 coturn dunst xvfb dbus debootstrap)

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to install packages: run as root or install sudo"
    fi
}

install_deps() {
    local missing=()
    for p in "${SERVER_PACKAGES[@]}" "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get: install them by hand"
        say "installing system packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    command -v cargo >/dev/null 2>&1 || die "no Rust toolchain: install it from https://rustup.rs and run this again"
}

postgres_up() {
    (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}

# The store tests also run against PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth),
# as on the development and CI machines. Elsewhere they are skipped, and say so.
prepare_postgres() {
    if [ -n "${SIDECALL_TEST_POSTGRES:-}" ]; then
        return
    fi
    if ! postgres_up && command -v pg_ctlcluster >/dev/null 2>&1; then
        say "starting PostgreSQL"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 1 20); do postgres_up && break; sleep 0.5; done
    fi
    if postgres_up; then
        export SIDECALL_TEST_POSTGRES="postgres://postgres@127.0.0.1:5432"
    elif [ "${CI:-}" = "true" ]; then
        die "CI expects PostgreSQL at 127.0.0.1:5432 and there is none"
    else
        say "no PostgreSQL at 127.0.0.1:5432: the PostgreSQL store test is skipped"
        export SIDECALL_TEST_POSTGRES=skip
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    deps)
        install_deps "${DESKTOP_PACKAGES[@]}"
        ;;
    run)
        install_deps "${DESKTOP_PACKAGES[@]}" "${RUN_PACKAGES[@]}"
        say "building Sidecall (release; the first build takes several minutes)"
        cargo build --release --locked --bins
        say "starting Sidecall (a first run offers to host its own server)"
        exec ./target/release/sidecall "$@"
        ;;
    server)
        # The server alone: no desktop packages, no window, camera or codec code.
        install_deps
        cargo build --release --locked --no-default-features --bin sidecall-server
        exec ./target/release/sidecall-server "$@"
        ;;
    test)
        install_deps "${DESKTOP_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
        prepare_postgres
        say "building and running the tests"
        status=0
        cargo test --locked --all-targets --no-fail-fast -- --skip slow_link:: "$@" || status=$?
        say "the slow-link video tests, on their own (they count decoded pictures per second)"
        cargo test --locked --test it --no-fail-fast -- slow_link:: "$@" || status=$?
        say "the server alone builds without the desktop's packages"
        cargo check --locked --no-default-features --bin sidecall-server || status=$?
        say "desktop app smoke test under Xvfb"
        ./packaging/gui-smoke.sh target/debug/sidecall target/gui-smoke.png || status=$?
        say "the Debian package, installed on a clean Debian 12"
        if deb=$(./packaging/linux/deb.sh --debug --no-build); then
            ./packaging/linux/deb-test.sh "$deb" || status=$?
        else
            status=1
        fi
        exit $status
        ;;
    deb)
        install_deps "${DESKTOP_PACKAGES[@]}"
        say "building the Debian package (release; the first build takes several minutes)"
        ./packaging/linux/deb.sh
        ;;
    *)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
