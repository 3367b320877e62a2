#!/bin/bash
#
# Build the debug kernel that run-tests.sh boots: Debian's linux-source-6.12
# configured as tinyconfig + kernel/configs/kvm_guest.config + debug.config
# (lockdep with raw-lock nesting checks, KASAN, kmemleak, UBSAN, object
# debugging). Run it directly to build or check the cached kernel:
#
#   tests/debug-kernel/build.sh
#
# or source it after tests/lib.sh and call nvq_debug_kernel_build.
#
# The tree lives in $NVQ_CACHE/debug-kernel/linux-source-6.12, built in
# place, so it is both the KDIR for module builds (with Module.symvers)
# and the home of arch/x86/boot/bzImage. A stamp file next to it records
# the debug.config hash, the linux-source-6.12 package version and the
# compiler of the last good build. The build is skipped while all three
# match, and a package version change unpacks the source again.
# NOTE: the stamp does not cover this script itself. After changing how it
# configures or builds the kernel, delete the stamp to force a rebuild.

NVQ_DEBUG_KERNEL_FRAGMENT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/debug.config
NVQ_DEBUG_KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz
# Packages that the kernel build needs.
NVQ_DEBUG_KERNEL_PACKAGES=(linux-source-6.12 xz-utils gcc make flex bison bc libelf-dev libssl-dev)

nvq_debug_kernel_dir() {
	echo "${NVQ_CACHE:-/var/cache/nv-kthread-q}/debug-kernel"
}

nvq_debug_kernel_tree() {
	echo "$(nvq_debug_kernel_dir)/linux-source-6.12"
}

nvq_debug_kernel_image() {
	echo "$(nvq_debug_kernel_tree)/arch/x86/boot/bzImage"
}

# Print the kernel release of the built tree, e.g. 6.12.118-nvq-debug.
nvq_debug_kernel_release() {
	local release_file
	release_file=$(nvq_debug_kernel_tree)/include/config/kernel.release

	[[ -s $release_file ]] || { echo "$release_file not found: build the debug kernel with tests/debug-kernel/build.sh" >&2; return 1; }
	cat "$release_file"
}

# Print the stamp that a build from the current inputs writes.
nvq_debug_kernel_stamp() {
	local fragment_hash source_version compiler

	fragment_hash=$(sha256sum "$NVQ_DEBUG_KERNEL_FRAGMENT" | cut -d ' ' -f 1) || return 1
	source_version=$(dpkg-query -W -f='${Version}' linux-source-6.12) || return 1
	compiler=$(gcc --version | head -n 1) || return 1
	printf 'debug.config sha256=%s\nlinux-source-6.12 version=%s\ncompiler=%s\n' \
		"$fragment_hash" "$source_version" "$compiler"
}

# Check that every option of debug.config has its value in the .config of
# TREE. Prints the options that differ, e.g. because a dependency is off.
nvq_debug_kernel_check_config() {
	local tree=$1
	local line option value
	local -a problems=()

	while IFS= read -r line; do
		if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
			option=${BASH_REMATCH[1]}
			value=${BASH_REMATCH[2]}
			if ! grep -qxF "$option=$value" "$tree/.config"; then
				problems+=("$option: expected $value, .config has: $(grep -E "^(# )?${option}[= ]" "$tree/.config" || echo "no entry")")
			fi
		elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
			option=${BASH_REMATCH[1]}
			if grep -q "^$option=" "$tree/.config"; then
				problems+=("$option: expected not set, .config has: $(grep "^$option=" "$tree/.config")")
			fi
		fi
	done <"$NVQ_DEBUG_KERNEL_FRAGMENT"

	if ((${#problems[@]} > 0)); then
		printf '%s\n' "${problems[@]}"
		return 1
	fi
}

# Configure and build TREE, writing make's output to LOG_FILE.
nvq_debug_kernel_make() {
	local tree=$1 log_file=$2 problems
	local -a make_args=(-C "$tree" -j "$(nproc)")

	make "${make_args[@]}" tinyconfig >"$log_file" 2>&1 || return 1
	(cd "$tree" && scripts/kconfig/merge_config.sh -m .config \
		kernel/configs/kvm_guest.config "$NVQ_DEBUG_KERNEL_FRAGMENT") >>"$log_file" 2>&1 || return 1
	make "${make_args[@]}" olddefconfig >>"$log_file" 2>&1 || return 1
	if ! problems=$(nvq_debug_kernel_check_config "$tree" 2>&1); then
		printf 'debug.config options that the kernel config does not have:\n%s\n' "$problems" >>"$log_file"
		return 1
	fi
	# The modules target writes Module.symvers, which module builds
	# against this tree need.
	make "${make_args[@]}" bzImage modules >>"$log_file" 2>&1
}

# Build the debug kernel unless the cached tree was built from the same
# inputs. Prints progress to stdout; on failure prints the end of the build
# log and returns 1.
nvq_debug_kernel_build() {
	local dir tree stamp_file log_file expected_stamp built_source expected_source
	local start=$SECONDS

	nvq_install_packages "${NVQ_DEBUG_KERNEL_PACKAGES[@]}"
	[[ -r $NVQ_DEBUG_KERNEL_TARBALL ]] ||
		{ echo "$NVQ_DEBUG_KERNEL_TARBALL not found (package linux-source-6.12)"; return 1; }

	dir=$(nvq_debug_kernel_dir)
	tree=$(nvq_debug_kernel_tree)
	stamp_file=$dir/stamp
	log_file=$dir/build.log
	expected_stamp=$(nvq_debug_kernel_stamp) || { echo "computing the build stamp failed"; return 1; }

	if [[ -f $stamp_file && $(<"$stamp_file") == "$expected_stamp" && -f $(nvq_debug_kernel_image) &&
		-f $tree/Module.symvers ]]; then
		echo "debug kernel in $tree is up to date ($(nvq_debug_kernel_release))"
		return 0
	fi

	mkdir -p "$dir"
	# A tree without a stamp (never built, or its build failed or was
	# interrupted) or from another source version is unpacked again. One
	# from the same version is reconfigured in place, and make rebuilds
	# only what the change touches.
	built_source=$(grep '^linux-source-6.12 ' "$stamp_file" 2>/dev/null || true)
	expected_source=$(grep '^linux-source-6.12 ' <<<"$expected_stamp")
	if [[ -z $built_source || $built_source != "$expected_source" ]]; then
		echo "unpacking $NVQ_DEBUG_KERNEL_TARBALL into $dir"
		rm -rf "$tree" "$stamp_file"
		tar -xJf "$NVQ_DEBUG_KERNEL_TARBALL" -C "$dir" || { echo "could not unpack $NVQ_DEBUG_KERNEL_TARBALL"; return 1; }
	fi
	rm -f "$stamp_file"

	echo "building the debug kernel in $tree with $(nproc) jobs, log: $log_file"
	if ! nvq_debug_kernel_make "$tree" "$log_file"; then
		echo "debug kernel build failed, last lines of $log_file:"
		tail -n 30 "$log_file"
		return 1
	fi
	echo "$expected_stamp" >"$stamp_file"
	echo "built debug kernel $(nvq_debug_kernel_release) in $((SECONDS - start)) s"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
	source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
	if ((EUID != 0)); then
		nvq_die "run as root: the build installs packages with apt-get"
	fi
	nvq_debug_kernel_build || exit 1
fi
