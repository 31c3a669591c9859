#!/usr/bin/env bash
# Adversary: one bbaudit per state_dir (collector/state_lock.py).
#   bash tests/adversary/state_lock_probe.sh
# Uses a config whose only source points at a closed loopback port (the run
# idles retrying) and a file sink; everything lives under a mktemp dir.
set -u
cd "$(dirname "$0")/../.."
BB=".venv/bin/bbaudit"
W=$(mktemp -d /tmp/adv-lock-XXXX)
port=$(.venv/bin/python -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
echo tok > "$W/token"; chmod 600 "$W/token"
mkcfg() { # $1 = state_dir, $2 = config path
  cat > "$2" <<EOF
state_dir: $1
log: {level: info, format: json}
http: {enabled: false}
sources:
- kind: dc_rest
  name: dc
  instance: bb
  base_url: http://127.0.0.1:$port
  auth: {token_file: $W/token}
sinks:
- {kind: file, name: out, path: $W/out.jsonl, receives: [events]}
EOF
}
start() { $BB run -c "$1" > "$2" 2>&1 & echo $!; }
second() { timeout 8 $BB run -c "$1" > "$2" 2>&1; echo $?; }

echo "== 1. two runs, same state_dir"
mkcfg "$W/state" "$W/a.yaml"
A=$(start "$W/a.yaml" "$W/a.log"); sleep 3
echo "second exit: $(second "$W/a.yaml" "$W/b.log") (124 = still running after 8 s = NOT locked out)"
tail -c 400 "$W/b.log"; echo

echo "== 2. same dir through a symlink"
ln -s "$W/state" "$W/link"
mkcfg "$W/link" "$W/c.yaml"
echo "symlinked exit: $(second "$W/c.yaml" "$W/c.log")"
tail -c 300 "$W/c.log"; echo

echo "== 3. lock file deleted while A runs (e.g. a 'stale lock' cleanup)"
rm -f "$W/state/bbaudit.lock"
echo "after rm, second exit: $(second "$W/a.yaml" "$W/d.log") (124 = two processes on one state_dir)"
kill "$A"; wait "$A" 2>/dev/null

echo "== 4. lock path is a directory"
mkcfg "$W/state4" "$W/e.yaml"; mkdir -p "$W/state4/bbaudit.lock"
echo "exit: $(second "$W/e.yaml" "$W/e.log")"; tail -n 3 "$W/e.log" | cut -c1-300

echo "== 5. state_dir is a file"
touch "$W/state5"; mkcfg "$W/state5" "$W/f.yaml"
echo "exit: $(second "$W/f.yaml" "$W/f.log")"; tail -n 2 "$W/f.log" | cut -c1-300

echo "== 6. read-only state_dir (bind mount, ro)"
mkdir -p "$W/ro/state"; mkcfg "$W/ro/state" "$W/g.yaml"
if mount --bind "$W/ro" "$W/ro" 2>/dev/null && mount -o remount,ro,bind "$W/ro" 2>/dev/null; then
  echo "exit: $(second "$W/g.yaml" "$W/g.log")"; tail -n 2 "$W/g.log" | cut -c1-300
  umount "$W/ro"
else
  echo "(could not make a read-only bind mount here; skipped)"
fi
echo "workdir $W"
