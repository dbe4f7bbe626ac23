#!/usr/bin/env bash
# Example PKI for the twinsite etcd cluster with openssl: one CA, per member a server and a
# peer certificate, and one client certificate for the controller. Keep ca.key offline.
# Usage: ./make-certs.sh [out-dir]
set -euo pipefail
out=${1:-pki}
mkdir -p "$out"
cd "$out"
days=825

openssl req -x509 -newkey rsa:4096 -nodes -days 3650 -subj "/CN=twinsite-etcd-ca" \
  -keyout ca.key -out ca.crt

sign() { # name cn san usage
  local name=$1 cn=$2 san=$3 usage=$4
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$san" "$usage" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days $days \
    -extfile "$name.ext" -out "$name.crt"
  rm -f "$name.csr" "$name.ext"
}

for member in dc-a:10.1.0.10 dc-b:10.2.0.10 witness:10.3.0.10; do
  name=${member%%:*}; ip=${member##*:}
  sign "$name-server" "$name" "IP:$ip,IP:127.0.0.1,DNS:etcd-$name.twinsite.example.invalid" serverAuth
  sign "$name-peer" "$name" "IP:$ip,DNS:etcd-$name.twinsite.example.invalid" serverAuth,clientAuth
done
sign twinsite-client twinsite "DNS:twinsite" clientAuth
echo "wrote $(pwd)"
