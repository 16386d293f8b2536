#!/usr/bin/env bash
# The package as a new user gets it: installs the .deb with apt into a clean Debian 12
# (a debootstrap chroot made here; apt reaches deb.debian.org), then runs
# `sidecall --version`, `sidecall-server --version` and the window under Xvfb from the
# installed files, checks the menu entry, icon, tel: handler and systemd units, and that
# removing the package leaves the user's data. Needs root (chroot); skipped with a notice
# otherwise.
#
#   packaging/linux/deb-test.sh target/deb/sidecall_*.deb
set -euo pipefail
deb=$(realpath "$1")
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ] || ! command -v debootstrap >/dev/null; then
    echo "NOTICE: package test skipped: it needs root and debootstrap" >&2
    exit 0
fi
work=$(realpath -m target/deb-test)
base="$work/bookworm-minbase.tar"
root="$work/root"
mkdir -p "$work"
cleanup() {
    for m in dev/pts dev proc sys; do umount -l "$root/$m" 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
if [ ! -s "$base" ]; then
    echo "==> making a clean Debian 12 (debootstrap, minbase)" >&2
    rm -rf "$root.tmp"
    debootstrap --variant=minbase bookworm "$root.tmp" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$root.tmp" -cf "$base" .
    rm -rf "$root.tmp"
fi
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$base"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/sidecall.deb"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

echo "==> apt install ./sidecall.deb (and Xvfb, to see the window)" >&2
in_root apt-get update -qq >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/sidecall.deb xvfb x11-utils >"$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; exit 1; }

fail() { echo "package test: $*" >&2; exit 1; }
v=$(in_root sidecall --version) || fail "sidecall --version failed"
s=$(in_root sidecall-server --version) || fail "sidecall-server --version failed"
echo "installed: $v; $s" >&2
in_root test -f /usr/share/applications/org.sidecall.Sidecall.desktop || fail "no menu entry"
in_root grep -q 'x-scheme-handler/tel' /usr/share/applications/org.sidecall.Sidecall.desktop || fail "not a tel: handler"
in_root grep -q 'x-scheme-handler/tel=org.sidecall.Sidecall.desktop' /usr/share/applications/mimeinfo.cache 2>/dev/null \
    || echo "note: no desktop database in a minimal system (update-desktop-database is in desktop-file-utils)" >&2
in_root test -f /usr/share/icons/hicolor/scalable/apps/org.sidecall.Sidecall.svg || fail "no icon"
in_root test -f /lib/systemd/system/sidecall-server.service || fail "no server unit"
in_root test -f /usr/lib/systemd/user/sidecall-watch.service || fail "no watch unit"

echo "==> the window under Xvfb, from the installed files" >&2
in_root sh -c '
    Xvfb :37 -screen 0 1024x768x24 -nolisten tcp >/tmp/xvfb.log 2>&1 &
    x=$!
    sleep 1
    mkdir -p /root/.config/sidecall
    DISPLAY=:37 XDG_RUNTIME_DIR=/tmp sidecall >/tmp/app.log 2>&1 &
    app=$!
    for i in $(seq 1 40); do
        if DISPLAY=:37 xwininfo -root -tree 2>/dev/null | grep -q "\"Sidecall\""; then found=1; break; fi
        sleep 0.5
    done
    alive=0; kill -0 $app 2>/dev/null && alive=1
    kill $app $x 2>/dev/null || true
    [ "${found:-0}" = 1 ] && [ $alive = 1 ] || { echo "no Sidecall window:"; cat /tmp/app.log; exit 1; }
    if grep -q "panicked at" /tmp/app.log; then echo "a thread of the installed app panicked:"; cat /tmp/app.log; exit 1; fi
' || fail "the installed app did not show its window"
echo "window shown" >&2

echo "==> removing keeps the user's data" >&2
in_root sh -c 'mkdir -p /root/.local/share/sidecall && echo keep > /root/.local/share/sidecall/mine'
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq sidecall >>"$work/apt.log" 2>&1 || fail "apt-get remove failed"
in_root test ! -e /usr/bin/sidecall || fail "sidecall still installed"
in_root test -f /root/.local/share/sidecall/mine || fail "the user's data went with the package"
in_root test -d /root/.config/sidecall || fail "the user's settings went with the package"
echo "package test: installed on a clean Debian 12, --version of both, window shown, removed with the data kept" >&2
