#!/usr/bin/env bash
# install.sh: install runsc-guard on a containerd node and put the node's
# gVisor runtime handlers behind it.
#
# The containerd configuration is edited by the guard binary itself
# (`containerd-shim-runsc-guard-v1 configure`, a real TOML parser), never by
# sed: only the runtime_type lines of the runsc handlers change, the previous
# value is kept in a comment on the same line for --uninstall, and each
# changed file is backed up as <file>.<UTC time>.runsc-guard.bak.
#
# Exit status: 0 done (or nothing to do), 1 refused or failed (the reason is
# printed; nothing was changed unless it says so), 2 bad usage.
set -euo pipefail

readonly guard_name=containerd-shim-runsc-guard-v1

usage() {
	cat <<EOF
usage: install.sh [options]

Installs ${guard_name} into a bin directory on containerd's PATH and switches
the containerd runtime handlers whose runtime_type is io.containerd.runsc.v1 to
io.containerd.runsc-guard.v1, keeping their options and every other line.

  --binary PATH      guard binary to install (default: bin/${guard_name}
                     next to this script, as built by 'make build')
  --prefix DIR       install into DIR/bin (default: /usr/local)
  --bin-dir DIR      install into DIR (overrides --prefix)
  --config PATH      containerd configuration (default: /etc/containerd/config.toml);
                     files it imports are followed
  --handler NAME     switch only this handler (repeatable)
  --dry-run          print what would change, as a diff; change nothing
  --uninstall        restore each handler's previous runtime_type; keeps the binary
  --remove-binary    with --uninstall, also remove the installed binary
  --restart          restart containerd afterwards and check the runtime answers
  --cgroup-root DIR  cgroupfs mount for the post-restart check (default: /sys/fs/cgroup)
  -h, --help         this text

Running it twice changes nothing the second time.
EOF
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
binary="${script_dir}/bin/${guard_name}"
binary_given=0
prefix=/usr/local
bin_dir=""
config=/etc/containerd/config.toml
cgroup_root=/sys/fs/cgroup
dry_run=0
uninstall=0
remove_binary=0
restart=0
handlers=()
# The service manager, overridable for tests.
systemctl=${SYSTEMCTL:-systemctl}

need_arg() {
	[[ $# -ge 2 && -n $2 ]] || {
		echo "install.sh: $1 needs a value" >&2
		usage >&2
		exit 2
	}
}

while [[ $# -gt 0 ]]; do
	case $1 in
	--binary) need_arg "$@"; binary=$2; binary_given=1; shift 2 ;;
	--prefix) need_arg "$@"; prefix=$2; shift 2 ;;
	--bin-dir) need_arg "$@"; bin_dir=$2; shift 2 ;;
	--config) need_arg "$@"; config=$2; shift 2 ;;
	--handler) need_arg "$@"; handlers+=(--handler "$2"); shift 2 ;;
	--cgroup-root) need_arg "$@"; cgroup_root=$2; shift 2 ;;
	--dry-run) dry_run=1; shift ;;
	--uninstall) uninstall=1; shift ;;
	--remove-binary) remove_binary=1; shift ;;
	--restart) restart=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done
[[ -n $bin_dir ]] || bin_dir="${prefix}/bin"
target="${bin_dir}/${guard_name}"

if [[ $remove_binary -eq 1 && $uninstall -eq 0 ]]; then
	echo "install.sh: --remove-binary goes with --uninstall" >&2
	exit 2
fi

# Refuse early, before anything is touched.
command -v containerd >/dev/null ||
	die "containerd not found on PATH ($PATH): install containerd first; nothing changed"
[[ -f $config ]] || die "containerd config $config not found (pass --config); nothing changed"
if [[ $uninstall -eq 0 ]]; then
	command -v containerd-shim-runsc-v1 >/dev/null ||
		die "gVisor's shim containerd-shim-runsc-v1 not found on PATH: the guard runs it for every container; install gVisor first; nothing changed"
	command -v runsc >/dev/null ||
		die "runsc not found on PATH: install gVisor first; nothing changed"
fi

# The binary that edits the config: the one to install, or for an
# uninstall without --binary the one installed.
guard=$binary
if [[ $uninstall -eq 1 && $binary_given -eq 0 && ! -x $binary ]]; then
	guard=$target
fi
[[ -x $guard ]] || die "guard binary $guard not found: run 'make build' or pass --binary; nothing changed"

configure=("$guard" configure --config "$config" "${handlers[@]}")
[[ $uninstall -eq 1 ]] && configure+=(--uninstall)

# A dry run of the edit first: it refuses a config it cannot parse or
# that has no gVisor handler, before the binary is copied.
if ! plan=$("${configure[@]}" --dry-run 2>&1); then
	die "$(printf '%s\n' "$plan" | sed 's/^configure: //')"
fi

if [[ $dry_run -eq 1 ]]; then
	if [[ $uninstall -eq 1 ]]; then
		[[ $remove_binary -eq 1 && -e $target ]] && echo "would remove $target"
	elif [[ -e $target ]] && cmp -s "$binary" "$target"; then
		echo "$target is up to date"
	else
		echo "would install $binary as $target"
	fi
	printf '%s\n' "$plan"
	exit 0
fi

if [[ $uninstall -eq 0 ]]; then
	if [[ -e $target ]] && cmp -s "$binary" "$target"; then
		echo "$target is up to date"
	else
		mkdir -p "$bin_dir"
		# Copy then rename: a guard serving pods keeps running from the
		# old file, and containerd never sees a half-written binary.
		tmp=$(mktemp "${bin_dir}/.${guard_name}.XXXXXX")
		trap 'rm -f "$tmp"' EXIT
		cp "$binary" "$tmp"
		chmod 0755 "$tmp"
		mv -f "$tmp" "$target"
		trap - EXIT
		echo "installed $target"
	fi
	case ":$PATH:" in
	*":$bin_dir:"*) ;;
	*) echo "install.sh: warning: $bin_dir is not on this PATH; containerd finds shims on its own PATH" >&2 ;;
	esac
fi

out=$("${configure[@]}" --backup 2>&1) || die "$out"
printf '%s\n' "$out"

if [[ $uninstall -eq 1 && $remove_binary -eq 1 && -e $target ]]; then
	rm -f "$target"
	echo "removed $target"
fi

if [[ $restart -eq 0 ]]; then
	if grep -q 'handler(s) changed' <<<"$out"; then
		echo "restart containerd to apply: systemctl restart containerd (or rerun with --restart)"
	fi
	exit 0
fi

"$systemctl" restart containerd || die "systemctl restart containerd failed; the config change is in place, see its backup"
for _ in $(seq 30); do
	"$systemctl" is-active --quiet containerd && break
	sleep 1
done
"$systemctl" is-active --quiet containerd ||
	die "containerd is not active after the restart: journalctl -u containerd; restore the backup to undo"
echo "containerd restarted"
if command -v crictl >/dev/null && [[ $uninstall -eq 0 ]]; then
	# The CRI plugin answers some seconds after the unit is active.
	listed=0
	for _ in $(seq 60); do
		if crictl info 2>/dev/null | grep -q 'io.containerd.runsc-guard.v1'; then
			listed=1
			break
		fi
		sleep 1
	done
	[[ $listed -eq 1 ]] ||
		die "crictl info does not list a io.containerd.runsc-guard.v1 handler 60 s after the restart"
	echo "crictl info lists the guard's handler"
fi
doctor=("$guard" doctor --config "$config" --cgroup-root "$cgroup_root")
[[ $uninstall -eq 1 ]] && exit 0
"${doctor[@]}" || die "doctor reports errors (above); the guard is installed"
