#!/bin/bash
#
# Static checks of the module sources: checkpatch.pl, kernel-doc, and a
# sparse (C=2) plus W=1 build per kernel. Run it directly, or through
# `make check`:
#
#   tests/static-checks.sh [KERNELRELEASE...]
#
# With no argument it checks against the running kernel's build tree. It
# prints one PASS or FAIL line per check and closes with "N passed, N
# failed". run-tests.sh sources this file and runs the same checks as part
# of the suite.
#
# checkpatch.pl comes from Debian's linux-source-6.12 package, unpacked
# once into $NVQ_CACHE. Packages needed: linux-source-6.12, sparse, and
# the headers of each kernel; run-tests.sh installs them.

# The checkpatch warnings we keep on purpose, with the reason for each:
#   NEW_TYPEDEFS          nv_kthread_q_t, nv_kthread_q_item_t and
#                         nv_q_func_t are part of the fixed public API.
#   CONSIDER_COMPLETION   the queue's design has its thread sleep on a
#                         semaphore, q_sem, which is a field of the public
#                         struct.
NVQ_CHECKPATCH_IGNORE=NEW_TYPEDEFS,CONSIDER_COMPLETION

NVQ_CHECK_SOURCES=(nv-kthread-q.c nv-kthread-q-selftest.c nv-kthread-q.h nv-kthread-q-os.h)
# The modules that are built against nv-kthread-q but not shipped with it.
NVQ_CHECK_OTHER_MODULE_SOURCES=(examples/consumer/nvq-consumer.c tests/stress/nvq-stress.c
	tests/faults/nvq-faults.c tests/lockdep-probe/nvq-lockdep-probe.c bench/nvq-bench.c)
# Read by run-tests.sh, which installs them.
# shellcheck disable=SC2034
NVQ_CHECK_PACKAGES=(linux-source-6.12 sparse xz-utils)

NVQ_CHECK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Print the path of checkpatch.pl, unpacking the kernel source tarball's
# scripts/ directory into $NVQ_CACHE on first use.
nvq_checkpatch_path() {
	local tarball=/usr/src/linux-source-6.12.tar.xz
	local cache=${NVQ_CACHE:-/var/cache/nv-kthread-q}/checkpatch
	local script=$cache/linux-source-6.12/scripts/checkpatch.pl

	if [[ ! -x $script ]]; then
		[[ -r $tarball ]] ||
			{ echo "$tarball not found (package linux-source-6.12)" >&2; return 1; }
		mkdir -p "$cache"
		tar -xJf "$tarball" -C "$cache" linux-source-6.12/scripts >&2 || return 1
	fi
	echo "$script"
}

# Run checkpatch.pl on the given source files, or on the module's own
# sources; fail on any error or warning that is not in NVQ_CHECKPATCH_IGNORE.
nvq_check_checkpatch() {
	local checkpatch output
	local -a sources=("$@")

	if ((${#sources[@]} == 0)); then
		sources=("${NVQ_CHECK_SOURCES[@]}")
	fi
	checkpatch=$(nvq_checkpatch_path) || return 1
	if ! output=$(cd "$NVQ_CHECK_DIR" && "$checkpatch" --no-tree -f --terse \
		--ignore "$NVQ_CHECKPATCH_IGNORE" "${sources[@]}" 2>&1); then
		echo "$output"
		return 1
	fi
}

# Run the kernel's kernel-doc script in -none mode, which reports only
# problems, on every source file.
nvq_check_kernel_doc() {
	local release=$1
	local kernel_doc=/lib/modules/$release/build/scripts/kernel-doc
	local output
	local -a flags=(-none)

	[[ -x $kernel_doc ]] || { echo "$kernel_doc not found"; return 1; }
	# -Wall (extra warnings, e.g. a missing Return: section) is newer than 6.1.
	if "$kernel_doc" -h 2>&1 | grep -q -- '-Wall'; then
		flags+=(-Wall)
	fi
	output=$(cd "$NVQ_CHECK_DIR" && "$kernel_doc" "${flags[@]}" "${NVQ_CHECK_SOURCES[@]}" 2>&1)
	if [[ -n $output ]]; then
		echo "$output"
		return 1
	fi
}

# Build a copy of the sources with sparse on every file (C=2) and W=1
# warnings; fail on any warning or error.
nvq_check_sparse_w1() {
	local release=$1
	local build_dir output status=0

	command -v sparse >/dev/null || { echo "sparse not found (package sparse)"; return 1; }
	build_dir=$(mktemp -d)
	cp "$NVQ_CHECK_DIR"/{Makefile,Kbuild} "$NVQ_CHECK_DIR"/*.c "$NVQ_CHECK_DIR"/*.h "$build_dir/"
	output=$(make -C "$build_dir" KERNELRELEASE="$release" C=2 W=1 2>&1) || status=$?
	rm -rf "$build_dir"

	if ((status != 0)) || grep -qE 'warning:|error:' <<<"$output"; then
		grep -E 'warning:|error:' <<<"$output" || tail -n 20 <<<"$output"
		return 1
	fi
}

# Run every check for the given kernel releases through REPORTER, which is
# called as: REPORTER LABEL COMMAND [ARGS...].
nvq_run_static_checks() {
	local reporter=$1 release
	shift

	"$reporter" "checkpatch" nvq_check_checkpatch
	"$reporter" "checkpatch of the example, test and benchmark modules" \
		nvq_check_checkpatch "${NVQ_CHECK_OTHER_MODULE_SOURCES[@]}"
	for release in "$@"; do
		"$reporter" "$release: kernel-doc" nvq_check_kernel_doc "$release"
		"$reporter" "$release: sparse and W=1 build" nvq_check_sparse_w1 "$release"
	done
}

nvq_static_checks_main() {
	local passed=0 failed=0
	local -a releases=("$@")

	report_check() {
		local label=$1 output
		shift

		if output=$("$@" 2>&1); then
			echo "PASS $label"
			passed=$((passed + 1))
		else
			echo "FAIL $label"
			printf '    %s\n' "${output//$'\n'/$'\n    '}"
			failed=$((failed + 1))
		fi
	}

	if ((${#releases[@]} == 0)); then
		releases=("$(uname -r)")
	fi
	nvq_run_static_checks report_check "${releases[@]}"
	echo "$passed passed, $failed failed"
	((failed == 0))
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	nvq_static_checks_main "$@"
fi
