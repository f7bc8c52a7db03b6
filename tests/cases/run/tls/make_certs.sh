#!/usr/bin/env bash
# Makes the certificates of the https judge run cases (judge_https,
# judge_https_ca): a test certificate authority and a server certificate
# for 127.0.0.1 and localhost signed by it, valid for 100 years. The loopback
# judge server of compiler/tests/run_cases.rs serves server.pem/server.key;
# judge_https_ca trusts ca.pem through its judge's `ca_file`. The CA's own
# key is not kept. Rerun from this folder: `bash make_certs.sh` (openssl).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days 36500 \
  -subj "/CN=saferc test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.sec1"
openssl pkcs8 -topk8 -nocrypt -in "$work/server.sec1" -out server.key
openssl req -new -key server.key -subj "/CN=localhost" -out "$work/server.csr"
cat > "$work/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EXT
openssl x509 -req -in "$work/server.csr" -CA ca.pem -CAkey "$work/ca.key" \
  -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days 36500 \
  -extfile "$work/server.ext" -out server.pem
openssl verify -CAfile ca.pem server.pem
