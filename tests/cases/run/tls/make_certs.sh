#!/usr/bin/env bash
# Makes the certificates of the https judge run cases (judge_https,
# judge_https_ca): a test certificate authority and a server certificate
# for 127.0.0.1 and localhost signed by it, valid from 2000 to 2100 (so a
# machine whose clock is off still accepts them). The loopback judge server
# of compiler/tests/run_cases.rs serves server.pem/server.key;
# judge_https_ca trusts ca.pem through its judge's `ca_file`. The CA's own
# key is not kept. Test-only material: see README.md. Rerun from this
# folder: `bash make_certs.sh` (openssl 3).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat > "$work/ca.cnf" <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha256
policy = any_name
unique_subject = no
[ any_name ]
commonName = supplied
CNF
touch "$work/index.txt"
echo 01 > "$work/serial"
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' > "$work/ca.ext"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$work/server.ext"
dates=(-startdate 20000101000000Z -enddate 21000101000000Z)

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl req -new -key "$work/ca.key" -subj "/CN=saferc test CA" -out "$work/ca.csr"
openssl ca -batch -notext -config "$work/ca.cnf" -selfsign -keyfile "$work/ca.key" \
  -in "$work/ca.csr" "${dates[@]}" -extfile "$work/ca.ext" -out ca.pem 2>/dev/null

openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.sec1"
{
  echo "TEST-ONLY private key of the saferc https judge run cases; public by design."
  echo "Never use it, or trust ca.pem, outside these tests (README.md)."
  openssl pkcs8 -topk8 -nocrypt -in "$work/server.sec1"
} > server.key
openssl req -new -key server.key -subj "/CN=localhost" -out "$work/server.csr"
openssl ca -batch -notext -config "$work/ca.cnf" -cert ca.pem -keyfile "$work/ca.key" \
  -in "$work/server.csr" "${dates[@]}" -extfile "$work/server.ext" -out server.pem 2>/dev/null
openssl verify -CAfile ca.pem server.pem
