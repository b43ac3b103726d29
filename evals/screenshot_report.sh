#!/usr/bin/env bash
# Renders report.html files in headless Chromium (Debian: apt-get install chromium) and writes
# a full-page PNG beside each, to look at the report as a reader would.
# Usage: evals/screenshot_report.sh REPORT.html [OUT.png] [WIDTH]
set -euo pipefail
report=$(realpath "$1")
out=$(realpath -m "${2:-${report%.html}.png}")
width=${3:-1280}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
# A tall window captures the whole page (headless Chromium shoots the window, not the page).
height=$(python3 - "$report" <<'PY'
import re, sys
html = open(sys.argv[1], encoding="utf-8").read()
images = len(re.findall(r"data:image/png", html))
rows = html.count("<tr")
print(int(1.5 * (400 + 650 * images + 32 * rows)))  # generous: the blank rest is trimmed below
PY
)
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
  --user-data-dir="$profile" --window-size="$width,$height" --screenshot="$out" \
  "file://$report" >/dev/null 2>&1
# Trim the blank space below the page's last element (needs Pillow, which matplotlib brings).
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$python" - "$out" <<'PY' || true
import sys
from PIL import Image, ImageChops
image = Image.open(sys.argv[1]).convert("RGB")
box = ImageChops.difference(image, Image.new("RGB", image.size, (255, 255, 255))).getbbox()
if box:
    image.crop((0, 0, image.width, min(image.height, box[3] + 40))).save(sys.argv[1], optimize=True)
PY
echo "wrote $out"
