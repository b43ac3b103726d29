#!/usr/bin/env bash
# Renders report.html files in headless Chromium (Debian: apt-get install chromium) and writes
# a full-page PNG beside each, to look at the report as a reader would.
# Usage: evals/screenshot_report.sh REPORT.html [OUT.png] [WIDTH]
set -euo pipefail
report=$(realpath "$1")
out=$(realpath -m "${2:-${report%.html}.png}")
width=${3:-1280}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
# A tall window captures the whole page; the height comes from the rendered document.
height=$(python3 - "$report" <<'PY'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
images = len(re.findall(r"data:image/png", html))
rows = html.count("<tr")
print(400 + 620 * images + 30 * rows)
PY
)
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --window-size="$width,$height" --screenshot="$out" \
  "file://$report" >/dev/null 2>&1
echo "wrote $out (${width}x$height)"
