#!/usr/bin/env bash
# Makes the DEVELOPMENT certificates in this directory with the openssl CLI: a dev CA and a leaf
# for *.linkedge.test, localhost, 127.0.0.1 and ::1, both ECDSA P-256, valid 10 years.
# These are test keys, committed on purpose so a fresh clone runs; never use them in production.
set -euo pipefail
cd "$(dirname "$0")"
openssl ecparam -name prime256v1 -genkey -noout -out dev-ca.key
openssl req -x509 -new -key dev-ca.key -sha256 -days 3650 -subj "/CN=linkedge development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out dev-ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out leaf.key.tmp
openssl pkcs8 -topk8 -nocrypt -in leaf.key.tmp -out leaf.key && rm leaf.key.tmp
openssl req -new -key leaf.key -subj "/CN=localhost" -out leaf.csr
cat > leaf.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:*.linkedge.test,DNS:linkedge.test,DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in leaf.csr -CA dev-ca.pem -CAkey dev-ca.key -CAcreateserial -days 3650 \
  -sha256 -extfile leaf.ext -out leaf.pem
rm -f leaf.csr leaf.ext dev-ca.srl
echo "made dev-ca.pem, dev-ca.key, leaf.pem, leaf.key in $(pwd)"
