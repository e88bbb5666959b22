#!/usr/bin/env bash
# One-command set-up for a fresh Debian 12 machine, run as root.
# Idempotent: every step checks before it acts, so a second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${SENSILLA_PYTHON:-python3}"
QUIET="${SENSILLA_BOOTSTRAP_QUIET:-}"

say() { [ -n "$QUIET" ] || echo "bootstrap: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: must run as root (eBPF, namespaces and apt need it)" >&2
    exit 1
fi

# --- apt packages -----------------------------------------------------------
APT_PACKAGES=(python3-bpfcc linux-headers-amd64 bpftool iproute2 iputils-ping iperf3
              iptables ipset clickhouse-server chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # clickhouse-server's postinst tries to start a service; there may be no init system.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernel headers for bcc (only when the running kernel has none) ---------
KDIR="/lib/modules/$(uname -r)"
if [ ! -e "$KDIR/build" ]; then
    hdr="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)"
    common="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)"
    if [ -z "$hdr" ]; then
        echo "bootstrap: no kernel headers under /usr/src" >&2
        exit 1
    fi
    say "linking kernel headers $hdr"
    mkdir -p "$KDIR"
    ln -sfn "$hdr" "$KDIR/build"
    [ -e "$KDIR/source" ] || ln -sfn "$common" "$KDIR/source"
fi

# --- bpffs --------------------------------------------------------------------
if ! mountpoint -q /sys/fs/bpf; then
    say "mounting bpffs at /sys/fs/bpf"
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
fi

# --- virtual environment ------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
fi

# Expose Debian's bcc package, and nothing else of dist-packages, to the venv.
SHIM="$VENV/bcc-shim"
if [ ! -e "$SHIM/bcc" ]; then
    mkdir -p "$SHIM"
    ln -sfn /usr/lib/python3/dist-packages/bcc "$SHIM/bcc"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
[ -f "$SITE/sensilla-bcc.pth" ] || echo "$SHIM" > "$SITE/sensilla-bcc.pth"

# Install the project (editable) with dev tools; re-run only when pyproject changes.
STAMP="$VENV/.sensilla-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    say "installing Python dependencies"
    "$VENV/bin/pip" install -q -e "$ROOT[dev]" 2> >(grep -v "^WARNING: Location" >&2)
    echo "$WANT" > "$STAMP"
fi

# --- generated gRPC code ----------------------------------------------------------
"$VENV/bin/python" "$ROOT/scripts/gen_protos.py"

say "ready ($VENV)"
