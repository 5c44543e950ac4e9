#!/usr/bin/env bash
# Makes the secrets a three-relay deployment needs (deploy/compose.yaml, deploy/k8s/), in one
# directory, for a lab or as a template: a private CA and a relay certificate, the auth key, and the
# tokens of the relays and of the sidecar. Production uses a certificate from a public CA for the
# public name instead (docs/deploy.md, "Three relays as one").
#
#   bash deploy/make-secrets.sh [DIR] [EXTRA_NAME...]    # DIR default: deploy/secrets
#
# DIR then holds:
#   tls/ca.pem, tls/ca.key        the private CA (ECDSA P-256; keep ca.key offline)
#   tls/fullchain.pem, privkey.pem  the relays' certificate (ECDSA P-256, 90 days), for every
#                                 relay name of compose.yaml and k8s/ (and EXTRA_NAMEs: your public
#                                 name, the load balancer's address), signed by the CA
#   keys/root.jwk                 the HS256 key the relays verify tokens with (--auth-key)
#   cluster.jwt                   the relays' token (--cluster-token-file): publish and watch all
#   sidecar.jwt                   the sidecar's token: watch all, publish under every name
#
# Nothing is overwritten: an existing file is kept (delete it to make a new one). Needs openssl and
# moqcast-token (on PATH, or built in target/release or target/debug).
set -euo pipefail

cd "$(dirname "$0")/.."
dir=${1:-deploy/secrets}
shift || true
say() { echo "make-secrets: $*" >&2; }

token_bin=${MOQCAST_TOKEN_BIN:-}
if [ -z "$token_bin" ]; then
    for c in "$(command -v moqcast-token || true)" target/release/moqcast-token target/debug/moqcast-token; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            token_bin=$c
            break
        fi
    done
fi
[ -n "$token_bin" ] || { say "moqcast-token not found: cargo build --release -p moqcast-relay --bin moqcast-token"; exit 1; }
command -v openssl >/dev/null 2>&1 || { say "openssl not found (apt-get install openssl)"; exit 1; }

mkdir -p "$dir/tls" "$dir/keys"
umask 077

# The names relays are reached by: compose service names, the Kubernetes services (namespace
# moqcast), pods by IP are reached through the headless service's names.
names=(localhost relay-origin-1 relay-origin-2 relay-edge-1
    moqcast-relay moqcast-relay.moqcast moqcast-relay.moqcast.svc moqcast-relay.moqcast.svc.cluster.local
    moqcast-relay-origin moqcast-relay-origin.moqcast.svc moqcast-relay-origin.moqcast.svc.cluster.local
    moqcast-relay-peers moqcast-relay-peers.moqcast.svc moqcast-relay-peers.moqcast.svc.cluster.local
    "*.moqcast-relay-peers.moqcast.svc.cluster.local" "$@")
san=""
for n in "${names[@]}"; do
    if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then
        san+="IP:$n,"
    else
        san+="DNS:$n,"
    fi
done
san+="IP:127.0.0.1,IP:::1"

if [ ! -f "$dir/tls/ca.pem" ]; then
    say "private CA: $dir/tls/ca.pem"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=moqcast private CA" -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.pem" 2>/dev/null
fi
if [ ! -f "$dir/tls/fullchain.pem" ]; then
    say "relay certificate: $dir/tls/fullchain.pem (${#names[@]} names)"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=moqcast-relay" -keyout "$dir/tls/privkey.pem" -out "$dir/tls/relay.csr" 2>/dev/null
    ext=$(mktemp)
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\nbasicConstraints=CA:FALSE\n' "$san" >"$ext"
    openssl x509 -req -in "$dir/tls/relay.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/tls/ca.key" \
        -CAcreateserial -days 90 -extfile "$ext" -out "$dir/tls/relay.pem" 2>/dev/null
    cat "$dir/tls/relay.pem" "$dir/tls/ca.pem" >"$dir/tls/fullchain.pem"
    rm -f "$ext" "$dir/tls/relay.csr" "$dir/tls/relay.pem" "$dir/tls/ca.srl"
fi
if [ ! -f "$dir/keys/root.jwk" ]; then
    say "auth key: $dir/keys/root.jwk"
    "$token_bin" generate --key "$dir/keys/root.jwk" --id root
fi
if [ ! -f "$dir/cluster.jwt" ]; then
    say "relay token: $dir/cluster.jwt (30 days)"
    "$token_bin" sign --key "$dir/keys/root.jwk" --publish "" --subscribe "" --expires 30d >"$dir/cluster.jwt"
fi
if [ ! -f "$dir/sidecar.jwt" ]; then
    say "sidecar token: $dir/sidecar.jwt (30 days)"
    "$token_bin" sign --key "$dir/keys/root.jwk" --publish "" --subscribe "" --expires 30d >"$dir/sidecar.jwt"
fi
# The containers run as uid 10001 (deploy/Containerfile): let it read what it mounts, but the CA key.
chmod 0755 "$dir" "$dir/tls" "$dir/keys"
chmod 0644 "$dir/tls/ca.pem" "$dir/tls/fullchain.pem" "$dir/tls/privkey.pem" "$dir/keys/root.jwk" \
    "$dir/cluster.jwt" "$dir/sidecar.jwt"
chmod 0600 "$dir/tls/ca.key"
say "done: $dir (world-readable for the containers' uid 10001 on a lab machine; on a shared host chown 10001 instead)"
