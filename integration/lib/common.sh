# shellcheck shell=bash
# Host-side helpers shared by run.sh and its libraries: logging, timing and
# the content-addressed cache.

log() { printf '[testbed %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

die() {
	printf '\n[testbed] FAILED: %s\n\n' "$*" >&2
	exit 1
}

# timed NAME CMD...: runs CMD, appends "NAME SECONDS" to $TIMINGS.
timed() {
	local name=$1 start=$SECONDS rc=0
	shift
	"$@" || rc=$?
	printf '%-28s %4ds%s\n' "$name" $((SECONDS - start)) \
		"$([ $rc = 0 ] || echo " (rc=$rc)")" >> "$TIMINGS"
	return $rc
}

# inputs_key ARG...: a short hash over strings and, for each ARG that is a
# file or directory, the names, modes and contents of its files. Caches are
# keyed by it, so changing any input of a build rebuilds it.
inputs_key() {
	local a
	for a in "$@"; do
		if [ -d "$a" ]; then
			(cd "$a" && find . -type f -printf '%m %p\n' | LC_ALL=C sort &&
				find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
		elif [ -f "$a" ]; then
			sha256sum < "$a"
		else
			printf '%s\n' "$a"
		fi
	done | sha256sum | cut -c1-16
}

# cache_ok DIR: DIR is a finished cache entry whose files all match the
# checksums recorded when it was built. The checksum is cksum's CRC (with
# the size): it detects a truncated or corrupted file, and reads the 3 GB
# image in about a second, where sha256sum took 10-50 s on 2 cores.
cache_ok() {
	[ -s "$1/CHECKSUMS" ] &&
		(cd "$1" && awk '{print $3}' CHECKSUMS | xargs cksum | cmp -s - CHECKSUMS)
}

# cache_seal TMP DIR: records checksums of TMP's files and moves TMP to
# DIR; other entries beside DIR (older keys) are removed.
cache_seal() {
	local tmp=$1 dir=$2
	(cd "$tmp" && find . -type f ! -name CHECKSUMS | LC_ALL=C sort | xargs cksum > CHECKSUMS)
	find "$(dirname "$dir")" -mindepth 1 -maxdepth 1 ! -path "$tmp" -exec rm -rf {} +
	mv "$tmp" "$dir"
}
