#!/bin/sh
# Test stand-in for an image credential provider plugin (pullsecretd's `credential-provider`
# is the real one): reads the CredentialProviderRequest on stdin and answers a
# CredentialProviderResponse on stdout, as the kubelet's exec protocol wants.
#
# Usage (as the kubelet runs it): credential-provider.sh --auth-key KEY --state DIR
#   KEY: the `auth` key to answer for (e.g. 127.0.0.1:5000)
#   DIR: a directory the test controls and reads:
#     calls/      each request is saved here (one file per run), with argv and $PROVIDER_ENV
#     mode        ok (default) | fail | hang | garbage | wrong-version | echo-token
#     user, password      the credential to answer with
#     cache-key-type      Image | Registry | Global (default Registry); "none" omits it
#     cache-duration      e.g. 5m, 0s; empty or missing omits cacheDuration
# The API version answered is the request's own (the kubelet checks they match).
set -eu

key=""
state=""
while [ $# -gt 0 ]; do
    case "$1" in
        --auth-key) key="$2"; shift 2 ;;
        --state) state="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

read_or() { if [ -s "$state/$1" ]; then cat "$state/$1"; else printf '%s' "$2"; fi; }

request=$(cat)
mkdir -p "$state/calls"
call="$state/calls/$(date +%s%N)-$$"
printf '%s' "$request" > "$call.request"
printf '%s\n' "env=${PROVIDER_ENV:-}" > "$call.meta"

mode=$(read_or mode ok)
version=$(printf '%s' "$request" | sed -n 's/.*"apiVersion":"\([^"]*\)".*/\1/p')
user=$(read_or user alice)
password=$(read_or password "")
cache_key_type=$(read_or cache-key-type Registry)
cache_duration=$(read_or cache-duration "")

case "$mode" in
    fail) echo "registry credentials unavailable" >&2; exit 3 ;;
    hang) exec sleep 30 ;;
    garbage) echo "<html>not JSON</html>"; exit 0 ;;
    wrong-version) version="credentialprovider.kubelet.k8s.io/v1alpha1" ;;
    echo-token)
        password=$(printf '%s' "$request" | sed -n 's/.*"serviceAccountToken":"\([^"]*\)".*/\1/p') ;;
esac

fields=""
if [ "$cache_key_type" != none ]; then
    fields="\"cacheKeyType\":\"$cache_key_type\","
fi
if [ -n "$cache_duration" ]; then
    fields="$fields\"cacheDuration\":\"$cache_duration\","
fi
printf '{"kind":"CredentialProviderResponse","apiVersion":"%s",%s"auth":{"%s":{"username":"%s","password":"%s"}}}\n' \
    "$version" "$fields" "$key" "$user" "$password"
