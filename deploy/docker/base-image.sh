#!/usr/bin/env bash
# Creates a minimal Debian bookworm image with python3 (3.11) and CA certificates, for machines
# that cannot pull python:3.11-slim (CI here: no registry answers). The service images build on
# it through `--build-arg BASE_IMAGE=...`. Kept once created: rebuilt only when missing.
#
#   deploy/docker/base-image.sh [TAG]        default TAG: aether-base:bookworm
#
# Needs root (debootstrap) and about 40 s.
set -euo pipefail

tag="${1:-aether-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -qq debootstrap >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    else
        echo "debootstrap is missing: apt-get install debootstrap" >&2
        exit 1
    fi
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
echo "creating base image $tag with debootstrap (about 40 s)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# What a container never reads: package caches and lists, docs, translations.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
# mktemp made the directory 0700, and it becomes the image's /: other users could not enter it.
chmod 0755 "$root"
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$tag" >/dev/null
echo "base image $tag created"
