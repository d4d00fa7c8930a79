#!/bin/bash
# customize.sh ROOTFS: mmdebstrap customize hook for the test-bed image.
# Everything here is independent of the guard: the guard binary and the
# scenario scripts arrive per run on the 9p share, the 2026 gVisor
# binaries on the tools disk.
set -euo pipefail
root=$1
here=$(cd "$(dirname "$0")" && pwd)

cp -a "$here/overlay/." "$root/"
echo tbvm > "$root/etc/hostname"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
# minbase has no /etc/hosts; CRI's RunPodSandbox fails without it
# ("open /etc/hosts: no such file or directory", docs/upstream.md#test-bed).
printf '127.0.0.1 localhost tbvm\n::1 localhost\n' > "$root/etc/hosts"
printf 'nameserver 127.0.0.1\n' > "$root/etc/resolv.conf"
chroot "$root" passwd -d root
chroot "$root" systemctl enable testbed.service
# The scenarios write containerd's config and start it themselves.
chroot "$root" systemctl disable containerd.service
# Nothing periodic may run during a measurement, and no login prompt may
# garble the serial console the host reads progress from.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer \
	e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer \
	serial-getty@ttyS0.service getty@tty1.service

mkdir -p "$root/var/lib/testbed"
"$here/oci-image.sh" "$root/bin/busybox" "$root/var/lib/testbed/bbpause.tar" \
	docker.io/library/bbpause:1

# CNI for the Kubernetes scenario: containerd reports the pod network ready
# (and kubelet the node Ready) only once a network config loads. Its pods
# use the host network, so the bridge below is never set up; containerd
# looks for plugins in /opt/cni/bin, Debian installs them in /usr/lib/cni.
mkdir -p "$root/opt/cni" "$root/etc/cni/net.d"
ln -s /usr/lib/cni "$root/opt/cni/bin"
cat > "$root/etc/cni/net.d/10-testbed.conflist" <<'JSON'
{"cniVersion": "1.0.0", "name": "testbed", "plugins": [
 {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
 {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
