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
# A thread that panicked (the window may carry on without it) is a failure too.
if grep -q "panicked at" "$work/app.log"; then
    echo "error: a thread of the app panicked:" >&2; grep -A3 "panicked at" "$work/app.log" >&2; exit 1
fi

# Second part: a video session shown in the real window. Bob runs the app (logged in through
# the command line beforehand, accepting Alice without asking); Alice dials from the command
# line with the test pattern. The window must show her picture.
kill "$app" 2>/dev/null || true
wait "$app" 2>/dev/null || true
server_bin="$(dirname "$bin")/sidecall-server"
[ -x "$server_bin" ] || { echo "error: $server_bin is not built" >&2; exit 1; }
"$server_bin" --listen 127.0.0.1:0 --relay-listen 127.0.0.1:0 --verify none --log warn --data-dir "$work/server" >"$work/server.log" 2>&1 &
server=$!
trap 'kill "${app:-0}" "${server:-0}" "${xvfb:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
url=""
for _ in $(seq 1 50); do
    url=$(grep -o 'http://[0-9.:]*' "$work/server.log" | head -n1 || true)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "error: the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
export SIDECALL_CONFIG_DIR="$work/video-config" SIDECALL_PASSWORD="gui smoke password" SIDECALL_RTC_LOOPBACK=1
"$bin" --profile alice account register --server "$url" --number "+4930123456" --name Alice >/dev/null
"$bin" --profile bob account register --server "$url" --number "+4915123456789" --name Bob >/dev/null
printf 'auto_accept = ["+4930123456"]\n[video]\nsource = "test-pattern"\nwidth = 640\nheight = 480\n' \
    >"$SIDECALL_CONFIG_DIR/profiles/bob.settings.toml"
DISPLAY="$display" SIDECALL_DATA_DIR="$work/video-data" XDG_STATE_HOME="$work/state" \
    "$bin" --profile bob >"$work/app-video.log" 2>&1 &
app=$!
sleep 3
"$bin" --profile alice dial "+4915123456789" --video test-pattern --video-size 640x480 --video-stats --hangup-after 8 \
    >"$work/dial.log" 2>&1 &
dial=$!
sleep 5
video_out="${out%.png}-video.png"
DISPLAY="$display" import -window root "$video_out"
cpu_ticks1=$(awk '{print $14+$15}' "/proc/$app/stat"); sleep 2; cpu_ticks2=$(awk '{print $14+$15}' "/proc/$app/stat")
busy=$(awk -v a="$cpu_ticks1" -v b="$cpu_ticks2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", (b-a)/hz/2*100}')
wait "$dial" || { echo "error: the video dial failed:" >&2; cat "$work/dial.log" >&2; exit 1; }
decoded=$(grep -o 'video (session) in: [^|]*' "$work/dial.log" | tail -n1)
# The window itself is grey on grey (its first screenshot has no strongly coloured pixel);
# the test pattern's bars are fully saturated. Share of pixels with HSL saturation > 50 %:
vivid=$(convert "$video_out" -colorspace HSL -channel G -separate +channel -threshold 50% -format '%[fx:mean]' info:)
echo "gui smoke: video session shown, screenshot $video_out (${vivid} of it vivid colour), app CPU ${busy}% while showing video; Alice's side: ${decoded}"
awk -v v="$vivid" 'BEGIN { exit !(v > 0.05) }' || { echo "error: the window shows no video" >&2; cat "$work/app-video.log" >&2; exit 1; }
if grep -q "panicked at" "$work/app-video.log"; then
    echo "error: a thread of the app panicked:" >&2; grep -A3 "panicked at" "$work/app-video.log" >&2; exit 1
fi
