# shellcheck shell=bash
# Test-bed binaries built from the Go module proxy, shipped to the VM as a
# small read-only ext4 disk (label tbtools, mounted at /opt/testbed) so the
# image cache does not depend on them. Cached under $CACHE/tools/<key>.

GVISOR_VERSION=v0.0.0-20260905035102-160fafc42237
CONTAINERD_VERSION=v2.4.2
CONTAINERD17_VERSION=v1.7.35
CRICTL_VERSION=v1.37.0
# The Kubernetes scenario's release: the one integration/kube/go.mod requires.
KUBE_VERSION=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$TB/kube/go.mod")
KUBE_PROGRAMS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
# The release name runsc-new reports: the gVisor release of
# GVISOR_VERSION's date (release-YYYYMMDD.N, as upstream stamps it).
RUNSC_NEW_RELEASE=release-20260905.0

# tools_paths: sets TOOLS_DIR and TOOLS_IMG from the key of the inputs.
tools_paths() {
	TOOLS_KEY=$(inputs_key "$GVISOR_VERSION" "$CONTAINERD_VERSION" "$CONTAINERD17_VERSION" "$CRICTL_VERSION" \
		"$(go env GOVERSION GOARCH)" "$TB/lib/binaries.sh" "$TB/kube")
	TOOLS_DIR=$CACHE/tools/$TOOLS_KEY
	TOOLS_IMG=$TOOLS_DIR/tools.img
}

# tools_ensure: makes TOOLS_IMG a valid tools disk, building it if needed.
tools_ensure() {
	local key
	tools_paths
	key=$TOOLS_KEY
	if cache_ok "$TOOLS_DIR"; then
		log "test-bed binaries: cached ($TOOLS_DIR)"
		return
	fi
	log "test-bed binaries: building $TOOLS_DIR (Go module proxy, 3-6 min cold)"
	timed tools-build tools_build "$CACHE/tools/.tmp-$key" ||
		die "building the test-bed binaries failed (log: $CACHE/tools/.tmp-$key/build.log)"
	cache_seal "$CACHE/tools/.tmp-$key" "$TOOLS_DIR"
}

# go_bin NAME PKG@VERSION [GO BUILD FLAGS...]: a static, stripped binary
# built into $tmp/bin/NAME.
go_bin() {
	local name=$1 pkg=$2
	shift 2
	log "  go install $pkg"
	GOBIN=$tmp/gobin CGO_ENABLED=0 go install "$@" "$pkg" >> "$tmp/build.log" 2>&1 || return
	mv "$tmp/gobin/$(basename "${pkg%@*}")" "$tmp/bin/$name"
}

# go_mod_bin NAME MODULE@VERSION PKGDIR [GO BUILD FLAGS...]: as go_bin, for
# a module `go install` refuses (containerd 1.7's go.mod has exclude
# directives): built as the main module, from a copy of its source.
go_mod_bin() {
	local name=$1 mod=$2 pkg=$3 dir src=$tmp/src/${2//\//_}
	shift 3
	log "  go build $mod $pkg"
	if [ ! -d "$src" ]; then
		dir=$(cd "$tmp" && go mod download -json "$mod" 2>> "$tmp/build.log" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -d "$dir" ] || return
		mkdir -p "$tmp/src" && cp -r "$dir" "$src" && chmod -R u+w "$src" || return
	fi
	(cd "$src" && CGO_ENABLED=0 go build -mod=mod "$@" -o "$tmp/bin/$name" "$pkg") >> "$tmp/build.log" 2>&1
}

# kube_bin: integration/kube, the single-node cluster in one binary, and a
# link to it by each program's name (it runs as the name it is called by).
# Stamped with its release as upstream's builds are (hack/lib/version.sh):
# kubelet and kubectl report it, and version skew is judged by it.
kube_bin() {
	local v p ld=""
	log "  go build integration/kube (Kubernetes $KUBE_VERSION: $KUBE_PROGRAMS)"
	v=${KUBE_VERSION#v}
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=${v%%.*} -X $p.gitMinor=$(cut -d. -f2 <<< "$v")"
		ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	(cd "$TB/kube" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w$ld" -o "$tmp/bin/kube" .) \
		>> "$tmp/build.log" 2>&1 || return
	for p in $KUBE_PROGRAMS; do
		ln -s kube "$tmp/bin/$p"
	done
}

tools_build() {
	local tmp=$1
	rm -rf "$tmp"
	mkdir -p "$tmp/bin" "$tmp/gobin"
	# runsc must be static: the sandbox re-execs /proc/self/exe inside an
	# empty chroot with no ld.so (docs/upstream.md#test-bed). `go install` leaves
	# the version unset (VERSION_MISSING); stamp it as a release build is,
	# since the guard and doctor read the release date from
	# `runsc --version` to tell which upstream fixes a runsc has.
	go_bin runsc-new gvisor.dev/gvisor/runsc@$GVISOR_VERSION \
		-ldflags="-s -w -X gvisor.dev/gvisor/runsc/version.version=$RUNSC_NEW_RELEASE" || return
	# The real 2026 gVisor shim: the guard's delegate.
	go_bin containerd-shim-runsc-v1 gvisor.dev/gvisor/shim@$GVISOR_VERSION -ldflags='-s -w' || return
	# containerd 2.x for scenario 7 (docs/upstream.md#test-bed); btrfs needs cgo.
	go_bin containerd2 github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION \
		-tags no_btrfs -ldflags='-s -w' || return
	go_bin ctr2 github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION \
		-tags no_btrfs -ldflags='-s -w' || return
	# containerd 1.7 for scenario 10, stamped as its release is (git describe).
	local ctrd17=github.com/containerd/containerd@$CONTAINERD17_VERSION
	local ld17="-s -w -X github.com/containerd/containerd/version.Version=$CONTAINERD17_VERSION"
	go_mod_bin containerd17 "$ctrd17" ./cmd/containerd -tags no_btrfs -ldflags="$ld17" || return
	go_mod_bin ctr17 "$ctrd17" ./cmd/ctr -tags no_btrfs -ldflags="$ld17" || return
	go_bin crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION \
		-ldflags="-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" || return
	kube_bin || return
	rm -rf "${tmp:?}/gobin" "${tmp:?}/src"
	local mb
	mb=$(du -sm "$tmp/bin" | cut -f1)
	truncate -s $((mb + 64))M "$tmp/tools.img"
	mkfs.ext4 -q -F -L tbtools -d "$tmp/bin" "$tmp/tools.img" >> "$tmp/build.log" 2>&1 || return
	rm -rf "${tmp:?}/bin"
}
