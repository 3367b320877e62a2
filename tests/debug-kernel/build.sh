#!/bin/bash
#
# Build the kernels that run-tests.sh boots besides Debian's own. Each
# flavour is Debian's linux-source-6.12 configured as tinyconfig +
# kernel/configs/kvm_guest.config + base.config + its own fragment:
#
#   debug  debug.config: lockdep with raw-lock nesting checks, KASAN,
#          kmemleak, UBSAN, object debugging, fault injection and KUnit
#   race   race.config: KCSAN, the data race detector, which cannot be
#          combined with KASAN
#
# Run it directly to build or check the cached kernels of the given
# flavours, or of all flavours without arguments:
#
#   tests/debug-kernel/build.sh [debug] [race]
#
# or source it after tests/lib.sh and call nvq_test_kernel_build FLAVOUR.
# The nvq_debug_kernel_* functions do the same for the debug flavour.
#
# The tree of a flavour lives in $NVQ_CACHE/<flavour>-kernel/linux-source-6.12,
# built in place, so it is both the KDIR for module builds (with
# Module.symvers) and the home of arch/x86/boot/bzImage. A stamp file next
# to it records the sha256 of this script and of the fragments, the
# linux-source-6.12 package version and the compiler of the last good
# build. The build is skipped while all of them match. A package version
# change unpacks the source again, and any other change reconfigures the
# tree in place, so make rebuilds only what the change touches. A lock file
# in the same directory keeps two builds of one flavour from running at
# once.

NVQ_TEST_KERNEL_SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NVQ_TEST_KERNEL_FLAVOURS=(debug race)
NVQ_TEST_KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz
# Packages that the kernel build needs.
NVQ_TEST_KERNEL_PACKAGES=(linux-source-6.12 xz-utils gcc make flex bison bc libelf-dev libssl-dev)
# The name that run-tests.sh uses.
# shellcheck disable=SC2034
NVQ_DEBUG_KERNEL_PACKAGES=("${NVQ_TEST_KERNEL_PACKAGES[@]}")

# Fail with a message unless FLAVOUR is one of NVQ_TEST_KERNEL_FLAVOURS.
nvq_test_kernel_check_flavour() {
	local flavour=$1

	if [[ " ${NVQ_TEST_KERNEL_FLAVOURS[*]} " != *" $flavour "* ]]; then
		echo "unknown kernel flavour '$flavour' (known: ${NVQ_TEST_KERNEL_FLAVOURS[*]})" >&2
		return 1
	fi
}

# Print the Kconfig fragments of FLAVOUR, one path per line, in the order
# they are applied.
nvq_test_kernel_fragments() {
	local flavour=$1

	nvq_test_kernel_check_flavour "$flavour" || return 1
	printf '%s\n' "$NVQ_TEST_KERNEL_SCRIPT_DIR/base.config" "$NVQ_TEST_KERNEL_SCRIPT_DIR/$flavour.config"
}

nvq_test_kernel_dir() {
	local flavour=$1

	nvq_test_kernel_check_flavour "$flavour" || return 1
	echo "${NVQ_CACHE:-/var/cache/nv-kthread-q}/$flavour-kernel"
}

nvq_test_kernel_tree() {
	local dir

	dir=$(nvq_test_kernel_dir "$1") || return 1
	echo "$dir/linux-source-6.12"
}

nvq_test_kernel_image() {
	local tree

	tree=$(nvq_test_kernel_tree "$1") || return 1
	echo "$tree/arch/x86/boot/bzImage"
}

# Print the kernel release of the built tree of FLAVOUR, e.g.
# 6.12.118-nvq-debug.
nvq_test_kernel_release() {
	local flavour=$1
	local tree release_file

	tree=$(nvq_test_kernel_tree "$flavour") || return 1
	release_file=$tree/include/config/kernel.release
	if [[ ! -s $release_file ]]; then
		echo "$release_file not found: build the $flavour kernel with tests/debug-kernel/build.sh $flavour" >&2
		return 1
	fi
	cat "$release_file"
}

# Print the stamp that a build of FLAVOUR from the current inputs writes.
nvq_test_kernel_stamp() {
	local flavour=$1
	local file hash source_version compiler
	local -a fragments

	mapfile -t fragments < <(nvq_test_kernel_fragments "$flavour")
	((${#fragments[@]} > 0)) || return 1
	for file in "$NVQ_TEST_KERNEL_SCRIPT_DIR/build.sh" "${fragments[@]}"; do
		hash=$(sha256sum "$file" | cut -d ' ' -f 1) || return 1
		printf '%s sha256=%s\n' "$(basename "$file")" "$hash"
	done
	source_version=$(dpkg-query -W -f='${Version}' linux-source-6.12) || return 1
	compiler=$(gcc --version | head -n 1) || return 1
	printf 'linux-source-6.12 version=%s\ncompiler=%s\n' "$source_version" "$compiler"
}

# Check that every option of the fragments of FLAVOUR has its value in the
# .config of TREE, and that no option is set in two fragments. Prints the
# problems, e.g. an option that a missing dependency turned off.
nvq_test_kernel_check_config() {
	local flavour=$1 tree=$2
	local fragment fragment_name line option value
	local -a fragments options=() problems=()
	local -A expected=() fragment_of=()

	mapfile -t fragments < <(nvq_test_kernel_fragments "$flavour")
	((${#fragments[@]} > 0)) || return 1
	for fragment in "${fragments[@]}"; do
		fragment_name=$(basename "$fragment")
		while IFS= read -r line; do
			if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
				option=${BASH_REMATCH[1]}
				value=${BASH_REMATCH[2]}
			elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
				option=${BASH_REMATCH[1]}
				value=n
			else
				continue
			fi
			if [[ -n ${fragment_of[$option]:-} ]]; then
				problems+=("$option: set in both ${fragment_of[$option]} and $fragment_name, keep it in one of them")
			else
				options+=("$option")
			fi
			expected[$option]=$value
			fragment_of[$option]=$fragment_name
		done <"$fragment"
	done

	for option in "${options[@]}"; do
		value=${expected[$option]}
		if [[ $value == n ]]; then
			if grep -q "^$option=" "$tree/.config"; then
				problems+=("$option: expected not set, .config has: $(grep "^$option=" "$tree/.config")")
			fi
		elif ! grep -qxF "$option=$value" "$tree/.config"; then
			problems+=("$option: expected $value, .config has: $(grep -E "^(# )?${option}[= ]" "$tree/.config" || echo "no entry")")
		fi
	done

	if ((${#problems[@]} > 0)); then
		printf '%s\n' "${problems[@]}"
		return 1
	fi
}

# Configure TREE as FLAVOUR and build it, writing make's output to LOG_FILE.
nvq_test_kernel_make() {
	local flavour=$1 tree=$2 log_file=$3 problems
	local -a make_args=(-C "$tree" -j "$(nproc)") fragments

	mapfile -t fragments < <(nvq_test_kernel_fragments "$flavour")
	((${#fragments[@]} > 0)) || return 1
	make "${make_args[@]}" tinyconfig >"$log_file" 2>&1 || return 1
	(cd "$tree" && scripts/kconfig/merge_config.sh -m .config \
		kernel/configs/kvm_guest.config "${fragments[@]}") >>"$log_file" 2>&1 || return 1
	make "${make_args[@]}" olddefconfig >>"$log_file" 2>&1 || return 1
	if ! problems=$(nvq_test_kernel_check_config "$flavour" "$tree" 2>&1); then
		printf 'fragment options that the kernel config does not have:\n%s\n' "$problems" >>"$log_file"
		return 1
	fi
	# The modules target writes Module.symvers, which module builds
	# against this tree need.
	make "${make_args[@]}" bzImage modules >>"$log_file" 2>&1
}

# Build the FLAVOUR kernel unless the cached tree was built from the same
# inputs. Expects the lock of the flavour's directory to be held.
nvq_test_kernel_build_locked() {
	local flavour=$1
	local dir tree stamp_file log_file expected_stamp built_source expected_source
	local start=$SECONDS

	dir=$(nvq_test_kernel_dir "$flavour") || return 1
	tree=$(nvq_test_kernel_tree "$flavour") || return 1
	stamp_file=$dir/stamp
	log_file=$dir/build.log
	expected_stamp=$(nvq_test_kernel_stamp "$flavour") || { echo "computing the build stamp of the $flavour kernel failed"; return 1; }

	if [[ -f $stamp_file && $(<"$stamp_file") == "$expected_stamp" && -f $(nvq_test_kernel_image "$flavour") &&
		-f $tree/Module.symvers ]]; then
		echo "$flavour kernel in $tree is up to date ($(nvq_test_kernel_release "$flavour"))"
		return 0
	fi

	# A tree without a stamp (never built, or its build failed or was
	# interrupted) or from another source version is unpacked again. One
	# from the same version is reconfigured in place, and make rebuilds
	# only what the change touches.
	built_source=$(grep '^linux-source-6.12 ' "$stamp_file" 2>/dev/null || true)
	expected_source=$(grep '^linux-source-6.12 ' <<<"$expected_stamp")
	if [[ -z $built_source || $built_source != "$expected_source" ]]; then
		echo "unpacking $NVQ_TEST_KERNEL_TARBALL into $dir"
		rm -rf "$tree" "$stamp_file"
		tar -xJf "$NVQ_TEST_KERNEL_TARBALL" -C "$dir" || { echo "could not unpack $NVQ_TEST_KERNEL_TARBALL into $dir"; return 1; }
	fi
	rm -f "$stamp_file"

	echo "building the $flavour kernel in $tree with $(nproc) jobs, log: $log_file"
	if ! nvq_test_kernel_make "$flavour" "$tree" "$log_file"; then
		echo "$flavour kernel build failed, last lines of $log_file:"
		tail -n 30 "$log_file"
		return 1
	fi
	echo "$expected_stamp" >"$stamp_file"
	echo "built $flavour kernel $(nvq_test_kernel_release "$flavour") in $((SECONDS - start)) s"
}

# Build the FLAVOUR kernel unless the cached tree was built from the same
# inputs, waiting while another process builds the same flavour. Prints
# progress to stdout. On failure prints the end of the build log and
# returns 1.
nvq_test_kernel_build() {
	local flavour=$1
	local dir lock_fd status=0

	nvq_install_packages "${NVQ_TEST_KERNEL_PACKAGES[@]}"
	if [[ ! -r $NVQ_TEST_KERNEL_TARBALL ]]; then
		echo "$NVQ_TEST_KERNEL_TARBALL not found (package linux-source-6.12)"
		return 1
	fi
	dir=$(nvq_test_kernel_dir "$flavour") || return 1
	mkdir -p "$dir" || return 1

	exec {lock_fd}>>"$dir/lock" || return 1
	if ! flock -n "$lock_fd"; then
		echo "waiting for another build of the $flavour kernel to finish (lock: $dir/lock)"
		flock "$lock_fd" || { exec {lock_fd}>&-; return 1; }
	fi
	nvq_test_kernel_build_locked "$flavour" || status=$?
	exec {lock_fd}>&-
	return "$status"
}

# The debug flavour under the names that run-tests.sh uses.
nvq_debug_kernel_dir() { nvq_test_kernel_dir debug; }
nvq_debug_kernel_tree() { nvq_test_kernel_tree debug; }
nvq_debug_kernel_image() { nvq_test_kernel_image debug; }
nvq_debug_kernel_release() { nvq_test_kernel_release debug; }
nvq_debug_kernel_build() { nvq_test_kernel_build debug; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
	source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
	if ((EUID != 0)); then
		nvq_die "run as root: the build installs packages with apt-get"
	fi
	flavours=("$@")
	if ((${#flavours[@]} == 0)); then
		flavours=("${NVQ_TEST_KERNEL_FLAVOURS[@]}")
	fi
	for flavour in "${flavours[@]}"; do
		nvq_test_kernel_check_flavour "$flavour" || exit 2
	done
	failed_flavours=()
	for flavour in "${flavours[@]}"; do
		nvq_test_kernel_build "$flavour" || failed_flavours+=("$flavour")
	done
	if ((${#failed_flavours[@]} > 0)); then
		nvq_die "kernel build failed for: ${failed_flavours[*]}"
	fi
fi
