#!/usr/bin/env bash
# Runs bench/tls-floor against `openssl s_server` on 127.0.0.1 with a throwaway self-signed
# certificate: the resident memory of one verified native-tls connection and nothing else.
set -euo pipefail
cd "$(dirname "$0")/tls-floor"
cargo build --release --quiet
dir=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/key.pem" -out "$dir/cert.pem" \
  -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl s_server -accept "127.0.0.1:$port" -cert "$dir/cert.pem" -key "$dir/key.pem" -quiet \
  </dev/null >/dev/null 2>&1 &
server=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
target/release/tls-floor "$port" "$dir/cert.pem"
