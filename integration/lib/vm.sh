# shellcheck shell=bash
# Booting the test-bed VM with qemu, always under a time limit.
#
# Accelerator: KVM where it really boots a stock kernel, else TCG. The
# reference host's /dev/kvm is KVM-PVM (a Firecracker guest), which only
# runs kernels built with CONFIG_PVM_GUEST: a Debian kernel hangs right
# after "Probing EDD" (docs/upstream.md#test-bed). So KVM is probed once with a
# short bounded boot and the answer cached; RUNSC_GUARD_ACCEL=kvm|tcg
# skips the probe.

QEMU="qemu-system-x86_64"

# vm_accel: prints kvm or tcg.
vm_accel() {
	local want=${RUNSC_GUARD_ACCEL:-auto} key verdict
	case $want in
	kvm | tcg) echo "$want"; return ;;
	auto) ;;
	*) die "RUNSC_GUARD_ACCEL must be auto, kvm or tcg, not '$want'" ;;
	esac
	if [ ! -w /dev/kvm ]; then
		echo tcg
		return
	fi
	key=$(inputs_key "$(uname -r)" "$($QEMU --version | head -n1)" "$IMAGE_DIR/vmlinuz")
	verdict=$CACHE/accel/$key
	if [ ! -s "$verdict" ]; then
		mkdir -p "$CACHE/accel"
		vm_probe_kvm > "$verdict.tmp" && mv "$verdict.tmp" "$verdict"
	fi
	cat "$verdict"
}

# vm_probe_kvm: boots the image's kernel under KVM without a root disk for
# at most 20 s; a kernel that prints its banner under KVM works there.
vm_probe_kvm() {
	local out
	out=$(timeout -k 2 20 $QEMU -enable-kvm -cpu host -smp 1 -m 512 \
		-display none -monitor none -serial stdio -no-reboot -nic none \
		-kernel "$IMAGE_DIR/vmlinuz" \
		-append "console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1" \
		< /dev/null 2>&1 || true)
	if grep -q 'Linux version' <<< "$out"; then
		echo kvm
	else
		log "KVM probe: a stock kernel does not boot under this /dev/kvm (KVM-PVM?): using TCG"
		echo tcg
	fi
}

# vm_run SHARE RUNDIR TIMEOUT: boots the image with SHARE as 9p tag "share"
# (and $VM_APPEND on the kernel command line) and waits for it to power off
# or for TIMEOUT seconds. Guest lines that
# start with "TB:" are echoed as progress.
vm_run() {
	local share=$1 rundir=$2 limit=$3 accel cpu rc=0
	accel=$(vm_accel)
	# thread=multi: one host thread per vCPU; tb-size: a larger
	# translation cache (MiB).
	# shellcheck disable=SC2054 # the commas belong to qemu's option
	case $accel in
	kvm) cpu=(-enable-kvm -cpu host) ;;
	tcg) cpu=(-accel tcg,thread=multi,tb-size=512 -cpu max) ;;
	esac
	log "booting the VM ($accel, ${VM_MEM}M, limit ${limit}s; console: $rundir/console.log)"
	: > "$rundir/console.log"
	timeout -k 10 "$limit" $QEMU "${cpu[@]}" -smp 2 -m "$VM_MEM" \
		-display none -monitor none -serial "file:$rundir/console.log" \
		-no-reboot -nic none -pidfile "$rundir/qemu.pid" \
		-kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4${VM_APPEND:+ $VM_APPEND}" \
		-drive "file=$IMAGE_DIR/rootfs.img,if=virtio,format=raw,cache=unsafe,snapshot=on" \
		-drive "file=$TOOLS_IMG,if=virtio,format=raw,readonly=on" \
		-virtfs "local,path=$share,mount_tag=share,security_model=none,id=share" \
		< /dev/null > "$rundir/qemu.log" 2>&1 &
	local qemu=$!
	# Progress: echo the guest's "TB:" lines until qemu is gone.
	tail --pid=$qemu -n +1 -F "$rundir/console.log" 2>/dev/null |
		sed -un 's/\r$//; /^TB: /p' >&2 &
	wait $qemu || rc=$?
	wait $! || true
	vm_stop
	[ $rc = 124 ] && log "the VM did not finish within ${limit}s: killed"
	return $rc
}

# vm_stop: ends qemu if it still runs (also the EXIT trap).
vm_stop() {
	local pid
	if [ -s "$RUN_DIR/qemu.pid" ]; then
		pid=$(cat "$RUN_DIR/qemu.pid")
		kill "$pid" 2>/dev/null && sleep 1 && kill -9 "$pid" 2>/dev/null
		rm -f "$RUN_DIR/qemu.pid"
	fi
	return 0
}
