#!/bin/sh
# Puts llhttp's generated C sources (from Debian's node-llhttp package) into $1.
# node-llhttp is not installed (it would pull in Debian's nodejs); its .deb is
# downloaded and unpacked instead. An installed copy is used when present.
set -eu
dest=${1:-build/llhttp}
mkdir -p "$dest"
if [ -f /usr/share/llhttp/llhttp.c ] && [ -f /usr/share/include/llhttp/llhttp.h ]; then
    cp /usr/share/llhttp/llhttp.c /usr/share/llhttp/api.c /usr/share/llhttp/http.c \
       /usr/share/include/llhttp/llhttp.h "$dest"/
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
( cd "$tmp" && apt-get download node-llhttp >/dev/null ) || {
    echo "fetch-llhttp: 'apt-get download node-llhttp' failed; run 'apt-get update' first" >&2
    exit 1
}
dpkg-deb -x "$tmp"/node-llhttp_*.deb "$tmp/x"
cp "$tmp"/x/usr/share/llhttp/llhttp.c "$tmp"/x/usr/share/llhttp/api.c \
   "$tmp"/x/usr/share/llhttp/http.c "$tmp"/x/usr/share/include/llhttp/llhttp.h "$dest"/
cp "$tmp"/x/usr/share/doc/node-llhttp/copyright "$dest"/COPYRIGHT
