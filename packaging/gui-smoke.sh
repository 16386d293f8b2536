#!/usr/bin/env bash
# Starts the real `sidecall` desktop app under Xvfb, hosting its own server, and takes a
# screenshot once it shows its window. Fails if the window never appears, the app dies, or
# the picture is blank. Usage: packaging/gui-smoke.sh [BINARY] [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/debug/sidecall}
out=${2:-target/gui-smoke.png}
PACKAGES=(xvfb xauth libxkbcommon-x11-0 libgl1 libegl1 libgl1-mesa-dri x11-utils imagemagick)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing for the GUI smoke test: ${missing[*]}" >&2
    sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
    $sudo_ apt-get update -qq
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -x "$bin" ] || { echo "error: $bin is not built (cargo build --bin sidecall)" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "${app:-0}" "${xvfb:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
display=":$((90 + RANDOM % 9))"
Xvfb "$display" -screen 0 1024x768x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xvfb=$!
for _ in $(seq 1 50); do xdpyinfo -display "$display" >/dev/null 2>&1 && break; sleep 0.1; done

# A first run: the app offers to host a server; a settings file makes it use a free port.
mkdir -p "$work/config/profiles"
printf 'host_server = true\nhost_port = 0\n' >"$work/config/profiles/default.settings.toml"
DISPLAY="$display" SIDECALL_CONFIG_DIR="$work/config" SIDECALL_DATA_DIR="$work/data" \
    XDG_STATE_HOME="$work/state" RUST_LOG=info "$bin" >"$work/app.log" 2>&1 &
app=$!

shown=""
for _ in $(seq 1 100); do
    if ! kill -0 "$app" 2>/dev/null; then
        echo "error: the app exited early:" >&2; cat "$work/app.log" >&2; exit 1
    fi
    if xwininfo -display "$display" -root -tree 2>/dev/null | grep -q '"Sidecall"'; then shown=1; break; fi
    sleep 0.2
done
[ -n "$shown" ] || { echo "error: no Sidecall window appeared" >&2; cat "$work/app.log" >&2; exit 1; }
sleep 2
mkdir -p "$(dirname "$out")"
DISPLAY="$display" import -window root "$out"
colors=$(identify -format '%k' "$out")
# Idle cost after start: the window should not repaint continuously.
cpu=$(ps -o %cpu= -p "$app" | tr -d ' ')
rss=$(ps -o rss= -p "$app" | tr -d ' ')
sleep 3
ticks1=$(awk '{print $14+$15}' "/proc/$app/stat"); sleep 5; ticks2=$(awk '{print $14+$15}' "/proc/$app/stat")
idle=$(awk -v a="$ticks1" -v b="$ticks2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b-a)/hz/5*100}')
echo "gui smoke: window shown, screenshot $out ($colors colours), RSS ${rss} KiB, idle CPU ${idle}% over 5 s (start-up average ${cpu}%)"
[ "$colors" -gt 8 ] || { echo "error: the screenshot is blank" >&2; exit 1; }
