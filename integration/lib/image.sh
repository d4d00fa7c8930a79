# shellcheck shell=bash
# The VM image: Debian bookworm (minbase + systemd, containerd 1.6, Debian's
# runsc, CNI plugins, kernel; the workload images) made by mmdebstrap, as a raw ext4 image plus the kernel
# and initrd to boot it directly. Cached under $CACHE/image/<key>.

IMAGE_SUITE=bookworm
IMAGE_SIZE=4G

# image_ensure: sets IMAGE_DIR to a valid image, building it if needed.
image_ensure() {
	local key
	key=$(inputs_key "$IMAGE_SUITE" "$IMAGE_SIZE" "$TB/image" "$TB/lib/image.sh" \
		"$(image_sources)")
	IMAGE_DIR=$CACHE/image/$key
	if cache_ok "$IMAGE_DIR"; then
		log "VM image: cached ($IMAGE_DIR)"
		return
	fi
	log "VM image: building $IMAGE_DIR (mmdebstrap, about 3 min)"
	timed image-build image_build "$CACHE/image/.tmp-$key" ||
		die "building the VM image failed (log: $CACHE/image/.tmp-$key/build.log)"
	cache_seal "$CACHE/image/.tmp-$key" "$IMAGE_DIR"
}

# image_sources: the apt sources the image is built from: the host's own
# (so a mirror or snapshot configured on the host is used).
image_sources() {
	local f
	for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
		[ -s "$f" ] && { echo "$f"; return; }
	done
	echo "http://deb.debian.org/debian"
}

image_build() {
	local tmp=$1 pkgs kver
	rm -rf "$tmp"
	mkdir -p "$tmp/rootfs"
	pkgs=$(grep -v '^#' "$TB/image/packages.txt" | xargs | tr ' ' ,)
	mmdebstrap --mode=root --variant=minbase --include="$pkgs" \
		--customize-hook="$TB/image/customize.sh \"\$1\"" \
		"$IMAGE_SUITE" "$tmp/rootfs" "$(image_sources)" > "$tmp/build.log" 2>&1 || return
	# The seed's manifests name python:3.12-bookworm; the test bed cannot
	# pull it, so it is Debian bookworm's own bash and python3 (3.11), as
	# a one-layer image of that name (the manifests stay byte-identical).
	mmdebstrap --mode=root --variant=minbase --include=python3,python-is-python3 \
		--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		"$IMAGE_SUITE" "$tmp/python-root" "$(image_sources)" >> "$tmp/build.log" 2>&1 || return
	"$TB/image/oci-image.sh" "$tmp/python-root" "$tmp/rootfs/var/lib/testbed/python.tar" \
		docker.io/library/python:3.12-bookworm >> "$tmp/build.log" 2>&1 || return
	rm -rf "$tmp/python-root"
	kver=$(ls "$tmp/rootfs/lib/modules" | head -n1)
	cp "$tmp/rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
	cp "$tmp/rootfs/boot/initrd.img-$kver" "$tmp/initrd.img"
	truncate -s "$IMAGE_SIZE" "$tmp/rootfs.img"
	mkfs.ext4 -q -F -L tbroot -d "$tmp/rootfs" "$tmp/rootfs.img" >> "$tmp/build.log" 2>&1 || return
	rm -rf "$tmp/rootfs"
}
