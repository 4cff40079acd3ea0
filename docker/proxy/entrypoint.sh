#!/bin/sh
# Start nginx with the certificate in /etc/adacs-tls (tls.crt with its chain, tls.key). With none
# there, make a self-signed one for TLS_SERVER_NAME first: enough for a trial or a client that
# pins it, never what users of a hospital network should be asked to accept.
set -eu
dir=/etc/adacs-tls
name=${TLS_SERVER_NAME:-localhost}
if [ ! -s "$dir/tls.crt" ] || [ ! -s "$dir/tls.key" ]; then
  echo "proxy: no certificate in $dir: making a self-signed one for $name (give your own in production)" >&2
  umask 077
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=$name" \
    -addext "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1" \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
fi
nginx -t -q
exec nginx -g 'daemon off;'
