#!/usr/bin/env bash
# Builds the Debian package of Sidecall: the app, the command line and the server, stripped;
# the app in the menu with its icon and as the tel:/callto: handler; the server as an
# optional systemd unit (its own user, data kept on removal); `sidecall watch` as a systemd
# user unit.
#
#   packaging/linux/deb.sh [--debug] [--no-build] [--out DIR]
#
# Release binaries by default; --debug packs target/debug (what the package test uses, to
# spare CI a second full build). Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
build=1
out=target/deb
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --no-build) build=0 ;;
        --out) out="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb is needed (Debian's dpkg)" >&2; exit 1; }
if [ "$build" = 1 ]; then
    flag=(); [ "$profile" = release ] && flag=(--release)
    cargo build --locked "${flag[@]}" --bin sidecall --bin sidecall-server >&2
fi
bin="target/$profile"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/share/applications" \
    "$stage/usr/share/doc/sidecall" "$stage/lib/systemd/system" "$stage/usr/lib/systemd/user" \
    "$stage/usr/share/icons/hicolor/scalable/apps"
for b in sidecall sidecall-server; do
    install -m 0755 "$bin/$b" "$stage/usr/bin/$b"
    strip --strip-unneeded "$stage/usr/bin/$b"
done
install -m 0644 packaging/linux/sidecall.desktop "$stage/usr/share/applications/org.sidecall.Sidecall.desktop"
install -m 0644 assets/icons/org.sidecall.Sidecall.svg "$stage/usr/share/icons/hicolor/scalable/apps/"
for s in 48 128 256; do
    install -d "$stage/usr/share/icons/hicolor/${s}x${s}/apps"
    install -m 0644 "assets/icons/org.sidecall.Sidecall-$s.png" \
        "$stage/usr/share/icons/hicolor/${s}x${s}/apps/org.sidecall.Sidecall.png"
done
install -m 0644 packaging/linux/sidecall-server.service "$stage/lib/systemd/system/"
install -m 0644 packaging/linux/sidecall-watch.service "$stage/usr/lib/systemd/user/"
install -m 0644 README.md PROTOCOL.md "$stage/usr/share/doc/sidecall/"
cat > "$stage/usr/share/doc/sidecall/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sidecall
License: MIT or Apache-2.0
COPY
size=$(du -sk "$stage/usr" "$stage/lib" | awk '{s+=$1} END {print s}')
cat > "$stage/DEBIAN/control" <<CONTROL
Package: sidecall
Version: $version
Architecture: $arch
Maintainer: Sidecall developers <dev@sidecall.invalid>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1, libstdc++6, libasound2, libx11-6, libxcursor1, libxrandr2, libxi6, libxkbcommon0, libxkbcommon-x11-0, libgl1, libegl1
Recommends: libgl1-mesa-dri, dbus-user-session
Suggests: dunst | notification-daemon
Section: net
Priority: optional
Homepage: https://sidecall.invalid
Description: video and files beside your phone call
 When you make an ordinary phone call, Sidecall opens a data session beside it:
 the two desktops find each other through the called number, the called person
 accepts, and camera video and files flow while you keep talking on the phone.
 Includes sidecall-server, the registry and signaling server (systemd unit
 sidecall-server.service, not started by default).
CONTROL
cat > "$stage/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    command -v update-desktop-database >/dev/null && update-desktop-database -q /usr/share/applications || true
    command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t /usr/share/icons/hicolor || true
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
exit 0
POST
cat > "$stage/DEBIAN/postrm" <<'POST'
#!/bin/sh
# Removing the package keeps everyone's data: ~/.config/sidecall, ~/.local/share/sidecall
# and the server's /var/lib/sidecall-server.
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
POST
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/sidecall_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$stage" "$deb" >&2
echo "$deb"
