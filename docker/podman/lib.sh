# shellcheck shell=bash
# docker/podman/lib.sh - podman on this project's build machines, sourced by
# scripts/deploy-check, scripts/stack and scripts/ci-dry-run (bash).
#
# What it wraps (see docs/deploy.md, "Building here with podman"):
#   - CONTAINERS_CONF pointing at docker/podman/containers.conf (runc,
#     cgroupfs, ulimits the machine allows); without it every `podman run` fails;
#   - the packages: podman, buildah, runc, ... (apt-get, installed when missing);
#   - the base image: no registry can be reached, so localhost/debian:bookworm
#     is made with debootstrap from the machine's own Debian mirror;
#   - building docker/Dockerfile with --network host and --format docker
#     (HEALTHCHECK and STOPSIGNAL are Docker-format fields);
#   - free loopback ports below 32768 (the ephemeral range starts there).
# Callers must set ROOT (the repository root). Functions return non-zero and
# say why on stderr; none of them skips silently.

: "${ROOT:?lib.sh needs ROOT}"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/docker/podman/containers.conf}
SLUICE_BASE_IMAGE=${SLUICE_BASE_IMAGE:-localhost/debian:bookworm}
SLUICE_IMAGE=${SLUICE_IMAGE:-localhost/sluice:dev}
PODMAN_PACKAGES=(podman buildah runc fuse-overlayfs slirp4netns uidmap catatonit debootstrap)

# apt_install PKG... : install the Debian packages that are missing.
apt_install() {
	local p missing=()
	for p in "$@"; do
		[[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	echo "installing: ${missing[*]}"
	local sudo=()
	if ((EUID != 0)); then
		if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
			sudo=(sudo -E)
		else
			echo "error: installing ${missing[*]} needs root (or passwordless sudo)" >&2
			return 1
		fi
	fi
	# package scripts must not start services (prometheus, rsyslog, redis):
	# the stack starts what it needs itself
	local policy=/usr/sbin/policy-rc.d created=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null && "${sudo[@]}" chmod 755 "$policy" && created=1
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 -qq update &&
		DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 -q install -y \
			--no-install-recommends "${missing[@]}" || rc=$?
	((created)) && "${sudo[@]}" rm -f "$policy"
	return $rc
}

# podman_ready : podman is installed and can run a container here.
podman_ready() {
	apt_install "${PODMAN_PACKAGES[@]}" || return 1
	if ! podman info >/dev/null 2>&1; then
		echo "error: 'podman info' fails with CONTAINERS_CONF=$CONTAINERS_CONF:" >&2
		podman info 2>&1 | tail -n 5 >&2
		return 1
	fi
}

# debian_mirror : the Debian mirror the host's apt uses.
debian_mirror() {
	local m
	m=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
		grep -v security | grep -oE 'https?://[^ ]+' | head -n 1)
	echo "${m:-http://deb.debian.org/debian}"
}

# base_image_ready : localhost/debian:bookworm exists, made with debootstrap if not.
base_image_ready() {
	podman image exists "$SLUICE_BASE_IMAGE" && return 0
	local mirror dir rc=0
	mirror=$(debian_mirror)
	dir=$(mktemp -d /var/tmp/sluice-rootfs.XXXXXX) || return 1
	echo "making $SLUICE_BASE_IMAGE with debootstrap from $mirror"
	if debootstrap --variant=minbase bookworm "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1; then
		local sec=${mirror%/debian}/debian-security
		printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
			"$mirror" "$mirror" "$sec" >"$dir/rootfs/etc/apt/sources.list"
		rm -rf "$dir/rootfs/var/cache/apt/archives/"*.deb "$dir/rootfs/var/lib/apt/lists/"*
		tar -C "$dir/rootfs" -c . | podman import - "$SLUICE_BASE_IMAGE" >/dev/null || rc=$?
	else
		rc=$?
		echo "error: debootstrap failed; the end of its log:" >&2
		tail -n 20 "$dir/debootstrap.log" >&2
	fi
	rm -rf "$dir"
	return $rc
}

# build_image [TAG] : build docker/Dockerfile from the repository root.
build_image() {
	local tag=${1:-$SLUICE_IMAGE} version revision
	version=$(sed -n 's/^AC_INIT(\[sluice\], *\[\([^]]*\)\].*/\1/p' "$ROOT/configure.ac")
	revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
	podman build --network host --format docker -f "$ROOT/docker/Dockerfile" \
		--build-arg BASE_IMAGE="$SLUICE_BASE_IMAGE" \
		--build-arg VERSION="${version:-dev}" --build-arg REVISION="$revision" \
		--build-arg SOURCE="${SLUICE_SOURCE_URL:-$(git -C "$ROOT" remote get-url origin 2>/dev/null || echo unknown)}" \
		-t "$tag" "$ROOT"
}

# free_port : a TCP port on 127.0.0.1 below 32768 that nothing listens on.
free_port() {
	/usr/bin/python3 - <<'EOF'
import random, socket
for _ in range(200):
    p = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("no free port")
EOF
}

# wait_http URL [SECONDS] : until URL answers (any HTTP status), or fail.
wait_http() {
	local url=$1 n=$((${2:-20} * 10))
	while ((n-- > 0)); do
		curl -s -o /dev/null --max-time 1 "$url" && return 0
		sleep 0.1
	done
	echo "error: $url did not answer" >&2
	return 1
}
