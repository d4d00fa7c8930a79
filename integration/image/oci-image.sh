#!/bin/bash
# oci-image.sh BUSYBOX|ROOTFS-DIR OUT.tar NAME
# Writes a one-layer OCI image archive (OCI layout in a tar). The test bed
# has no registry: the archive is imported with `ctr -n k8s.io images
# import`. Given a static busybox, the root filesystem is that busybox with
# relative applet links: the pod sandbox ("pause") image and the crictl
# scenarios' workload image (docs/upstream.md#test-bed). Given a
# directory, it is the root filesystem (the Kubernetes scenario's Debian
# bookworm with bash and python3, named as the seed's manifests name it).
set -euo pipefail

src=$1 out=$2 name=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -d "$src" ]; then
	root=$src
	env='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' cmd='"python3"'
else
	root=$work/root
	env='"PATH=/bin"' cmd='"/bin/sleep","2147483647"'
	mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp}
	chmod 1777 "$root/tmp"
	install -m 0755 "$src" "$root/bin/busybox"
	# Relative links: `busybox --install -s` writes absolute ones that do not
	# resolve inside the container (docs/upstream.md#test-bed).
	for applet in $("$src" --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
	done
fi

blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"
# put FILE: stores FILE as a blob, prints "DIGEST SIZE".
put() {
	local sum size
	sum=$(sha256sum "$1" | cut -d' ' -f1)
	size=$(stat -c %s "$1")
	mv "$1" "$blobs/$sum"
	echo "sha256:$sum $size"
}

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
	-C "$root" -cf "$work/layer.tar" .
read -r layer layer_size < <(put "$work/layer.tar")

cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":[$env],"Cmd":[$cmd]},"rootfs":{"type":"layers","diff_ids":["$layer"]}}
JSON
read -r config config_size < <(put "$work/config.json")

cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$layer","size":$layer_size}]}
JSON
read -r manifest manifest_size < <(put "$work/manifest.json")

cat > "$work/layout/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest","size":$manifest_size,"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"${name##*:}"}}]}
JSON
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/layout/oci-layout"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
	-C "$work/layout" -cf "$out" .
