# shellcheck shell=bash
#
# Helpers for the QEMU tests, sourced by demo.sh and run-tests.sh: install
# the host packages and Debian kernels, build the module per kernel, pack a
# busybox initramfs, boot it and parse the serial console log that
# guest-init.sh writes.
#
# Settings, all optional, from the environment:
#   NVQ_CACHE         build and initramfs directory (/var/cache/nv-kthread-q)
#   NVQ_SRC_DIR       directory with the module sources (the repository root)
#   NVQ_BOOT_TIMEOUT  seconds one QEMU boot may take before it is killed (180),
#                     unless NVQ_RELEASE_BOOT_TIMEOUT sets another for a kernel
#   NVQ_EXTRA_KERNEL_ARGS
#                     arguments added to the kernel command line of every boot,
#                     e.g. "kcsan.skip_watch=200" for more KCSAN watchpoints
#
# The NVQ_* variables are read by the scripts that source this file.
# shellcheck disable=SC2034

# modinfo lives in /usr/sbin, which a non-login root shell may lack in PATH.
PATH=$PATH:/usr/sbin:/sbin

NVQ_TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NVQ_REPO_DIR=$(dirname "$NVQ_TESTS_DIR")
NVQ_SRC_DIR=${NVQ_SRC_DIR:-$NVQ_REPO_DIR}
NVQ_CACHE=${NVQ_CACHE:-/var/cache/nv-kthread-q}
NVQ_LOG_DIR=$NVQ_TESTS_DIR/logs
NVQ_BOOT_TIMEOUT=${NVQ_BOOT_TIMEOUT:-180}

# Kernels that are not installed Debian packages, such as the debug kernel
# of run-tests.sh, register their settings here by kernel release. Unset
# entries take the defaults: /boot/vmlinuz-<release>,
# /lib/modules/<release>/build, a hung-task timeout of 30 s and
# NVQ_BOOT_TIMEOUT.
declare -A NVQ_RELEASE_IMAGE=() NVQ_RELEASE_TREE=()
declare -A NVQ_RELEASE_HUNG_TASK_TIMEOUT=() NVQ_RELEASE_BOOT_TIMEOUT=()

NVQ_MODULE_NAME=nv_kthread_q
NVQ_MODULE_FILE=nv-kthread-q.ko

# Host tools: QEMU, the static busybox for the guest, cpio and gzip to pack
# the initramfs, modinfo (kmod) to read the vermagic of a built module, and
# the compiler that Debian's kernels were built with.
NVQ_HOST_PACKAGES=(qemu-system-x86 busybox-static cpio gzip kmod make gcc-12 coreutils)

# Kernel log lines that fail a boot. Extended regular expressions, matched
# case-sensitively against the whole console log.
NVQ_SPLAT_PATTERNS=(
	'WARNING:'
	'BUG:'
	'kernel BUG at'
	'Oops'
	'Call Trace'
	'general protection fault'
	'INFO: task .* blocked'
	'soft lockup'
	'hard LOCKUP'
	'rcu_.*stall'
	'Kernel panic'
	'UBSAN:'
	'refcount_t:'
	# Lockdep, KASAN, object debugging, list debugging and kmemleak on the
	# debug kernel. Most of their reports also contain "WARNING:" or "BUG:".
	'possible circular locking dependency'
	'possible recursive locking'
	'inconsistent lock state'
	'possible irq lock inversion'
	'Invalid wait context'
	'suspicious RCU usage'
	'bad unlock balance'
	'held lock freed'
	'KASAN:'
	'ODEBUG:'
	'list_(add|del) corruption'
	'unreferenced object'
	'suspected memory leak'
)

# Taint bits that loading any unsigned out-of-tree module sets:
# TAINT_OOT_MODULE (O, 4096) and TAINT_UNSIGNED_MODULE (E, 8192).
# KUnit also sets TAINT_TEST (N, 262144) when it runs a suite, which the
# debug kernel does at every load of the module.
NVQ_EXPECTED_TAINT_MASK=$((4096 | 8192 | 262144))

# Kernel arguments of every boot. panic_on_warn turns any WARN into a failed
# boot. tsc=reliable keeps 6.1 from falling back to the slower hpet clock
# under TCG. printk.devkmsg=on lifts the rate limit on /dev/kmsg writes,
# which would drop guest-init.sh's marker lines. nvq_boot adds the
# hung-task timeout.
NVQ_KERNEL_ARGS="console=ttyS0 panic_on_warn=1 panic=-1 loglevel=7 tsc=reliable printk.devkmsg=on"

# A hung-task timeout of 30 s (120 s by default) reports a stuck insmod or
# rmmod with its stack well before NVQ_BOOT_TIMEOUT. One self-test run took
# 4-8 s in run-tests.sh on a 2-core TCG host.
NVQ_HUNG_TASK_TIMEOUT=30

nvq_log() {
	echo "nvq: $*"
}

nvq_die() {
	echo "nvq: error: $*" >&2
	exit 1
}

nvq_package_installed() {
	local status
	status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
	[[ $status == "install ok installed" ]]
}

NVQ_APT_UPDATED=no

# Install the packages that are not installed yet. apt-get update runs at
# most once per script run, and only when something is missing.
nvq_install_packages() {
	local package
	local -a missing=()

	for package in "$@"; do
		if ! nvq_package_installed "$package"; then
			missing+=("$package")
		fi
	done
	if ((${#missing[@]} == 0)); then
		return 0
	fi

	if [[ $NVQ_APT_UPDATED == no ]]; then
		nvq_log "apt-get update"
		apt-get update -q || nvq_die "apt-get update failed"
		NVQ_APT_UPDATED=yes
	fi
	nvq_log "installing: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
		nvq_die "apt-get install failed for: ${missing[*]}"
}

# Install the host tools and, for each kernel image metapackage given, the
# metapackage and its headers metapackage, in one apt-get run.
nvq_install_host_tools_and_kernels() {
	local image_metapackage
	local -a packages=("${NVQ_HOST_PACKAGES[@]}")

	for image_metapackage in "$@"; do
		packages+=("$image_metapackage" "$(nvq_headers_metapackage "$image_metapackage")")
	done
	nvq_install_packages "${packages[@]}"
}

# Print the headers metapackage that matches a kernel image metapackage,
# e.g. linux-headers-6.12-amd64 for linux-image-6.12-amd64.
nvq_headers_metapackage() {
	echo "linux-headers-${1#linux-image-}"
}

# Print the kernel release that an installed image metapackage depends on,
# e.g. 6.12.118+deb12-amd64 for linux-image-6.12-amd64.
nvq_resolve_release() {
	local metapackage=$1
	local depends release

	depends=$(dpkg-query -W -f='${Depends}' "$metapackage") ||
		nvq_die "package $metapackage is not installed"
	release=$(tr ',|' '\n' <<<"$depends" |
		sed -n 's/^ *linux-image-\([^ ]*\).*/\1/p' | head -n 1)
	[[ -n $release ]] ||
		nvq_die "no linux-image-* dependency in $metapackage (Depends: $depends)"
	echo "$release"
}

# Print the release of an installed kernel image metapackage after checking
# that its kernel image and build tree are present.
nvq_kernel_release() {
	local image_metapackage=$1
	local release

	release=$(nvq_resolve_release "$image_metapackage")
	[[ -r $(nvq_kernel_image "$release") ]] || nvq_die "kernel image $(nvq_kernel_image "$release") not found"
	[[ -f /lib/modules/$release/build/Makefile ]] ||
		nvq_die "kernel build tree /lib/modules/$release/build not found (package linux-headers-$release)"
	echo "$release"
}

# Print the kernel image to boot for a release.
nvq_kernel_image() {
	echo "${NVQ_RELEASE_IMAGE[$1]:-/boot/vmlinuz-$1}"
}

# Print the kernel build tree (KDIR) that modules for a release build
# against.
nvq_kernel_tree() {
	echo "${NVQ_RELEASE_TREE[$1]:-/lib/modules/$1/build}"
}

nvq_boot_timeout() {
	echo "${NVQ_RELEASE_BOOT_TIMEOUT[$1]:-$NVQ_BOOT_TIMEOUT}"
}

nvq_build_dir() {
	echo "$NVQ_CACHE/build/$1"
}

nvq_module_path() {
	echo "$(nvq_build_dir "$1")/$NVQ_MODULE_FILE"
}

nvq_consumer_path() {
	echo "$(nvq_build_dir "$1")/consumer/nvq-consumer.ko"
}

# Check that the vermagic of MODULE (a .ko or .ko.xz) names RELEASE.
nvq_check_vermagic() {
	local module=$1 release=$2
	local vermagic

	vermagic=$(modinfo -F vermagic "$module")
	if [[ $vermagic != "$release "* ]]; then
		echo "vermagic '$vermagic' of $module does not match $release"
		return 1
	fi
}

# Build the module for one kernel release in a fresh copy of the sources
# under $NVQ_CACHE/build/<release>, so no object file is shared between
# kernels. Writes make's output to LOG_FILE. Fails unless the .ko exists
# and its vermagic names the release.
nvq_build_module() {
	local release=$1 log_file=$2
	local build_dir kdir source
	local -a sources=()

	build_dir=$(nvq_build_dir "$release")
	kdir=$(nvq_kernel_tree "$release")
	for source in "$NVQ_SRC_DIR"/{Makefile,Kbuild} "$NVQ_SRC_DIR"/*.c "$NVQ_SRC_DIR"/*.h; do
		if [[ -f $source ]]; then
			sources+=("$source")
		fi
	done

	rm -rf "$build_dir"
	if ! mkdir -p "$build_dir" || ! cp "${sources[@]}" "$build_dir/"; then
		echo "could not copy the sources from $NVQ_SRC_DIR to $build_dir"
		return 1
	fi

	if ! make -C "$build_dir" KERNELRELEASE="$release" KDIR="$kdir" >"$log_file" 2>&1; then
		echo "make failed for $release, last lines of $log_file:"
		tail -n 20 "$log_file"
		return 1
	fi
	if [[ ! -f $build_dir/$NVQ_MODULE_FILE ]]; then
		echo "make succeeded but $build_dir/$NVQ_MODULE_FILE is missing"
		return 1
	fi
	nvq_check_vermagic "$build_dir/$NVQ_MODULE_FILE" "$release" || return 1

	# The example consumer, linked against this build's Module.symvers.
	mkdir -p "$build_dir/consumer"
	cp "$NVQ_SRC_DIR"/examples/consumer/{Makefile,Kbuild,nvq-consumer.c} "$build_dir/consumer/"
	if ! make -C "$build_dir/consumer" KERNELRELEASE="$release" KDIR="$kdir" NVQ_DIR="$build_dir" \
		>>"$log_file" 2>&1; then
		echo "make of the example consumer failed for $release, last lines of $log_file:"
		tail -n 20 "$log_file"
		return 1
	fi

	# The stress test, built the same way with the consumer's Makefile.
	mkdir -p "$build_dir/stress"
	cp "$NVQ_SRC_DIR"/examples/consumer/Makefile "$NVQ_SRC_DIR"/tests/stress/{Kbuild,nvq-stress.c} \
		"$build_dir/stress/"
	if ! make -C "$build_dir/stress" KERNELRELEASE="$release" KDIR="$kdir" NVQ_DIR="$build_dir" \
		>>"$log_file" 2>&1; then
		echo "make of the stress test failed for $release, last lines of $log_file:"
		tail -n 20 "$log_file"
		return 1
	fi
}

# Pack a gzip'ed newc initramfs with the static busybox, guest-init.sh as
# /init, the given module as /nv-kthread-q.ko, the stress test built beside
# it (in stress/) as /nvq-stress.ko and, if given, the example consumer as
# /nvq-consumer.ko.
nvq_build_initramfs() {
	local module_path=$1 output=$2 consumer_path=${3:-} dkms_release=${4:-}
	local busybox staging dkms_module modules_dir

	busybox=$(command -v busybox) || nvq_die "busybox not found (package busybox-static)"
	staging=$(mktemp -d)
	mkdir -p "$staging/bin"
	cp "$busybox" "$staging/bin/busybox"
	# The kernel runs /init through its #!/bin/sh line.
	ln -s busybox "$staging/bin/sh"
	install -m 0755 "$NVQ_TESTS_DIR/guest-init.sh" "$staging/init"
	cp "$module_path" "$staging/$NVQ_MODULE_FILE"
	if [[ -f $(dirname "$module_path")/stress/nvq-stress.ko ]]; then
		cp "$(dirname "$module_path")/stress/nvq-stress.ko" "$staging/"
	fi
	if [[ -n $consumer_path ]]; then
		cp "$consumer_path" "$staging/nvq-consumer.ko"
	fi
	# The module that DKMS installed, where modprobe finds it.
	if [[ -n $dkms_release ]]; then
		modules_dir=/lib/modules/$dkms_release
		mkdir -p "$staging$modules_dir/updates/dkms"
		for dkms_module in "$modules_dir"/updates/dkms/nv-kthread-q.ko*; do
			cp "$dkms_module" "$staging$modules_dir/updates/dkms/"
		done
		cp "$modules_dir/modules.dep" "$staging$modules_dir/"
	fi

	mkdir -p "$(dirname "$output")"
	(cd "$staging" && find . -print0 | cpio --null --create --format=newc --owner=0:0 --quiet) |
		gzip -1 >"$output"
	rm -rf "$staging"
}

# QEMU CPU and memory options of each guest topology, one topology per
# line. numa1 is one node with two vCPUs as two cores of one socket. numa2
# is two nodes of 512 MiB with one vCPU each. Each vCPU there needs its own
# socket: two cores of one socket share a last-level cache, and a cache
# shared across nodes makes the kernel WARN at boot ("llc-sibling CPU #0 is
# not on the same node").
declare -A NVQ_TOPOLOGIES=(
	[numa1]="-smp 2,sockets=1,cores=2,threads=1 -m 1G"
	[numa2]="-smp 2,sockets=2,cores=1,threads=1 -m 1G -object memory-backend-ram,size=512M,id=m0 -object memory-backend-ram,size=512M,id=m1 -numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1"
)

# Print the QEMU options of a guest topology, or fail if it is unknown.
nvq_topology_args() {
	local topology=$1

	if [[ -z ${NVQ_TOPOLOGIES[$topology]:-} ]]; then
		nvq_die "unknown guest topology '$topology' (known: ${!NVQ_TOPOLOGIES[*]})"
	fi
	echo "${NVQ_TOPOLOGIES[$topology]}"
}

# Print the online NUMA node list that the guest should report for a
# topology: 0 without -numa options, else 0-<count - 1>.
nvq_topology_nodes() {
	local node_count

	node_count=$(nvq_topology_args "$1" | awk '{ print gsub(/-numa node,/, "") }')
	if ((node_count <= 1)); then
		echo 0
	else
		echo "0-$((node_count - 1))"
	fi
}

# Boot RELEASE with INITRD under TCG and write the serial console to
# LOG_FILE. STEPS is the comma-separated step list for guest-init.sh.
# Returns QEMU's exit status, or timeout's 124 when the boot hung.
nvq_boot() {
	local release=$1 initrd=$2 topology=$3 steps=$4 log_file=$5
	local topology_args kernel_args
	local -a qemu_args

	topology_args=$(nvq_topology_args "$topology") || return 2
	kernel_args="$NVQ_KERNEL_ARGS"
	kernel_args+=" sysctl.kernel.hung_task_timeout_secs=${NVQ_RELEASE_HUNG_TASK_TIMEOUT[$release]:-$NVQ_HUNG_TASK_TIMEOUT}"
	kernel_args+=" nvq.steps=$steps${NVQ_EXTRA_KERNEL_ARGS:+ $NVQ_EXTRA_KERNEL_ARGS}"
	qemu_args=(
		-accel tcg -cpu max
		-nographic -no-reboot -nic none
		-kernel "$(nvq_kernel_image "$release")"
		-initrd "$initrd"
		-append "$kernel_args"
	)
	# Word splitting is intended: the options contain no spaces or globs.
	# shellcheck disable=SC2206
	qemu_args+=($topology_args)

	timeout --kill-after=10 "$(nvq_boot_timeout "$release")" \
		qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$log_file" 2>&1
}

# Print the kernel log of a boot from its console log: the lines up to the
# NVQ-STEPS-END marker, or all lines when the guest crashed or hung before
# it. Strips the carriage returns of the serial console.
nvq_kernel_log() {
	local log_file=$1

	awk '{ sub(/\r$/, ""); print } /NVQ-STEPS-END/ { exit }' "$log_file"
}

# Print the first MAX_LINES lines of TEXT and how many were left out.
nvq_print_head() {
	local text=$1 max_lines=$2
	local line_count

	line_count=$(wc -l <<<"$text")
	head -n "$max_lines" <<<"$text"
	if ((line_count > max_lines)); then
		echo "... $((line_count - max_lines)) more lines in the console log"
	fi
}

# Print the kernel log lines of one step, from its NVQ-STEP-BEGIN marker to
# its NVQ-STEP end marker. Prints nothing when the step never started.
nvq_step_lines() {
	local kernel_log=$1 step=$2

	awk -v step="$step" '
		$0 ~ ("NVQ-STEP-BEGIN " step "$") { inside = 1 }
		inside { print }
		inside && $0 ~ ("NVQ-STEP " step " rc=") { exit }
	' <<<"$kernel_log"
}

# Print "rc=<n> loaded=<yes|no>" from a step's end marker, or nothing.
nvq_step_result() {
	local kernel_log=$1 step=$2

	sed -n "s/.*NVQ-STEP $step \(rc=[0-9]* loaded=[a-z]*\).*/\1/p" <<<"$kernel_log" | head -n 1
}

NVQ_VERDICT_PASSED_RE="$NVQ_MODULE_NAME: self-test passed: ([0-9]+) of ([0-9]+) cases in [0-9]+ ms"
NVQ_VERDICT_FAILED_RE="$NVQ_MODULE_NAME: self-test FAILED: [0-9]+ of [0-9]+ cases failed in [0-9]+ ms"
NVQ_VERDICT_ANY_RE="$NVQ_MODULE_NAME: self-test (passed|FAILED)"

# Check that load step STEP ran the self-test and it passed: insmod
# returned 0, the module stayed loaded, there is exactly one verdict line,
# it reports N of N cases with N > 0, and no case printed a FAIL line.
# Prints the reasons and the step's kernel log lines on failure.
nvq_check_self_test_load() {
	local kernel_log=$1 step=$2
	local lines result verdict verdict_count=0
	local -a problems=()

	lines=$(nvq_step_lines "$kernel_log" "$step")
	result=$(nvq_step_result "$kernel_log" "$step")
	if [[ -z $result ]]; then
		echo "step $step did not finish (no 'NVQ-STEP $step' line)"
		if [[ -n $lines ]]; then
			nvq_print_head "$lines" 60
		fi
		return 1
	fi

	if [[ $result != "rc=0 loaded=yes" ]]; then
		problems+=("insmod result: $result (expected rc=0 loaded=yes)")
	fi
	while IFS= read -r verdict; do
		verdict_count=$((verdict_count + 1))
		if [[ $verdict =~ $NVQ_VERDICT_PASSED_RE ]]; then
			if [[ ${BASH_REMATCH[1]} != "${BASH_REMATCH[2]}" || ${BASH_REMATCH[2]} == 0 ]]; then
				problems+=("verdict counts are not N of N with N > 0")
			fi
		elif [[ $verdict =~ $NVQ_VERDICT_FAILED_RE ]]; then
			problems+=("self-test reported FAILED")
		else
			problems+=("verdict line has an unknown format")
		fi
	done < <(grep -E "$NVQ_VERDICT_ANY_RE" <<<"$lines" || true)
	if ((verdict_count == 0)); then
		problems+=("no self-test verdict line")
	elif ((verdict_count > 1)) && [[ $result == rc=0* ]]; then
		problems+=("$verdict_count self-test verdict lines (expected 1)")
	fi
	if grep -q "$NVQ_MODULE_NAME: FAIL:" <<<"$lines"; then
		problems+=("FAIL lines from self-test cases")
	fi

	if ((${#problems[@]} == 0)); then
		return 0
	fi
	printf '%s\n' "${problems[@]}" | uniq
	if [[ $result != rc=0* ]] && ((verdict_count > 1)); then
		echo "(busybox insmod retries a failed finit_module with init_module, so a failed load runs the self-test twice)"
	fi
	echo "kernel log of step $step:"
	nvq_print_head "$lines" 60
	return 1
}

# Check that unload step STEP returned 0 and the module is gone. LOAD_STEP
# is the load before it, named in the message when the module was never
# loaded.
nvq_check_unload() {
	local kernel_log=$1 step=$2 load_step=$3
	local result

	result=$(nvq_step_result "$kernel_log" "$step")
	if [[ $result == "rc=0 loaded=no" ]]; then
		return 0
	fi
	echo "rmmod result: ${result:-step did not finish} (expected rc=0 loaded=no)"
	if [[ $(nvq_step_result "$kernel_log" "$load_step") == *loaded=no ]]; then
		echo "the module was not loaded because step $load_step failed"
	fi
	nvq_step_lines "$kernel_log" "$step"
	return 1
}

# Check that load step STEP (insmod with run_self_test=0) loaded the module
# and printed no verdict, and that unload step UNLOAD_STEP removed it.
nvq_check_load_without_self_test() {
	local kernel_log=$1 step=$2 unload_step=$3
	local lines result unload_result
	local -a problems=()

	lines=$(nvq_step_lines "$kernel_log" "$step")
	result=$(nvq_step_result "$kernel_log" "$step")
	unload_result=$(nvq_step_result "$kernel_log" "$unload_step")

	if [[ $result != "rc=0 loaded=yes" ]]; then
		problems+=("insmod result: ${result:-step did not finish} (expected rc=0 loaded=yes)")
	fi
	if grep -qE "$NVQ_VERDICT_ANY_RE" <<<"$lines"; then
		problems+=("a self-test verdict was printed although run_self_test=0")
	fi
	if [[ $unload_result != "rc=0 loaded=no" ]]; then
		problems+=("rmmod result: ${unload_result:-step did not finish} (expected rc=0 loaded=no)")
	fi

	if ((${#problems[@]} == 0)); then
		return 0
	fi
	printf '%s\n' "${problems[@]}"
	if [[ -n $lines ]]; then
		echo "kernel log of step $step:"
		nvq_print_head "$lines" 60
	fi
	return 1
}

# Build the test module tests/NAME/nvq-NAME.c against the module built for
# RELEASE, and pack an initramfs that is BASE_INITRD plus /nvq-NAME.ko. The
# kernel unpacks concatenated cpio archives in order. Writes make's output
# to LOG_FILE.
nvq_build_test_module_initramfs() {
	local release=$1 name=$2 base_initrd=$3 output=$4 log_file=$5
	local build_dir module_dir staging

	build_dir=$(nvq_build_dir "$release")
	module_dir=$build_dir/$name
	rm -rf "$module_dir"
	mkdir -p "$module_dir"
	cp "$NVQ_TESTS_DIR/$name"/{Kbuild,"nvq-$name.c"} "$module_dir/"
	if ! make -C "$(nvq_kernel_tree "$release")" M="$module_dir" NVQ_DIR="$build_dir" \
		KBUILD_EXTRA_SYMBOLS="$build_dir/Module.symvers" modules >"$log_file" 2>&1; then
		echo "make of tests/$name failed, last lines of $log_file:"
		tail -n 20 "$log_file"
		return 1
	fi

	staging=$(mktemp -d)
	cp "$module_dir/nvq-$name.ko" "$staging/"
	{
		cat "$base_initrd"
		(cd "$staging" && find . -print0 | cpio --null --create --format=newc --owner=0:0 --quiet) | gzip -1
	} >"$output"
	rm -rf "$staging"
}

# Check that lockdep reported the circular dependency that the lockdep
# probe sets up between its mutex and a queue flush, naming both.
nvq_check_lockdep_probe() {
	local kernel_log=$1
	local lines pattern

	nvq_check_step_values "$kernel_log" lockdep_probe "rc=0" || return 1
	lines=$(nvq_step_lines "$kernel_log" lockdep_probe)
	for pattern in 'possible circular locking dependency detected' '\(\(nv_kthread_q\)\)' 'probe_mutex'; do
		if ! grep -qE "$pattern" <<<"$lines"; then
			echo "no line matching '$pattern' in step lockdep_probe:"
			nvq_print_head "$lines" 40
			return 1
		fi
	done
}

# Check the KTAP results of the KUnit suite, which a kernel built with
# CONFIG_KUNIT runs at every load of the module: each run must report every
# self-test case as passed, and no test may be "not ok".
nvq_check_kunit() {
	local kernel_log=$1
	local stats_re='# nvq_kunit_run_case: pass:([0-9]+) fail:([0-9]+) skip:([0-9]+) total:([0-9]+)'
	local case_count line runs=0
	local -a problems=()

	case_count=$(grep -E "$NVQ_VERDICT_PASSED_RE" <<<"$kernel_log" | head -n 1 |
		sed -E 's/.*passed: [0-9]+ of ([0-9]+) cases.*/\1/')
	while IFS= read -r line; do
		[[ $line =~ $stats_re ]] || continue
		runs=$((runs + 1))
		if [[ ${BASH_REMATCH[1]} != "$case_count" || ${BASH_REMATCH[4]} != "$case_count" ]]; then
			problems+=("KUnit run $runs: $line (expected pass and total of $case_count)")
		fi
	done < <(grep -E 'nvq_kunit_run_case: pass:' <<<"$kernel_log" || true)

	if ((runs == 0)); then
		problems+=("no KTAP results of the nv_kthread_q KUnit suite")
	fi
	if grep -qE '^\[[^]]*\] +not ok ' <<<"$kernel_log"; then
		problems+=("KTAP 'not ok' lines:")
		problems+=("$(grep -E '^\[[^]]*\] +not ok ' <<<"$kernel_log" | head -n 30)")
	fi
	if ((${#problems[@]} == 0)); then
		echo "$runs KUnit runs, each $case_count of $case_count cases passed"
		return 0
	fi
	printf '%s\n' "${problems[@]}"
	return 1
}

# Check that the end marker of STEP contains every "name=value" word of
# EXPECTED, e.g. "rc=0 consumer=yes".
nvq_check_step_values() {
	local kernel_log=$1 step=$2 expected=$3
	local marker word

	marker=$(grep -E "NVQ-STEP $step rc=" <<<"$kernel_log" | head -n 1)
	for word in $expected; do
		if [[ " $marker " != *" $word "* ]]; then
			echo "step $step: expected $expected, got: ${marker:-step did not finish}"
			nvq_step_lines "$kernel_log" "$step"
			return 1
		fi
	done
}

# Check that the consumer failed to load while nv-kthread-q was not loaded,
# with the kernel naming the missing symbols.
nvq_check_consumer_alone() {
	local kernel_log=$1

	nvq_check_step_values "$kernel_log" consumer_alone "loaded=no consumer=no" || return 1
	if grep -q "NVQ-STEP consumer_alone rc=0 " <<<"$kernel_log"; then
		echo "insmod of the consumer returned 0 without nv-kthread-q loaded"
		return 1
	fi
	if ! nvq_step_lines "$kernel_log" consumer_alone | grep -q 'Unknown symbol nv_kthread_q_'; then
		echo "no 'Unknown symbol nv_kthread_q_...' line in step consumer_alone:"
		nvq_step_lines "$kernel_log" consumer_alone
		return 1
	fi
}

# Check that the consumer unloaded and that its report shows every fake
# interrupt, every queued bottom half run, and the background item run.
nvq_check_consumer_unload() {
	local kernel_log=$1
	local report_re='nvq_consumer: stopped: ([0-9]+) interrupts, ([0-9]+) bottom halves queued, ([0-9]+) run; background item ran ([0-9]+) times'
	local report

	nvq_check_step_values "$kernel_log" consumer_unload "rc=0 loaded=yes consumer=no" || return 1
	report=$(nvq_step_lines "$kernel_log" consumer_unload | grep -E "$report_re" | head -n 1)
	if [[ ! $report =~ $report_re ]]; then
		echo "no report line from the consumer at unload:"
		nvq_step_lines "$kernel_log" consumer_unload
		return 1
	fi
	if ((BASH_REMATCH[1] != 200 || BASH_REMATCH[2] < 1 ||
		BASH_REMATCH[2] != BASH_REMATCH[3] || BASH_REMATCH[4] < 1)); then
		echo "expected 200 interrupts, queued bottom halves == runs >= 1, background runs >= 1:"
		echo "$report"
		return 1
	fi
}

# Check the whole console log for kernel warnings, crashes and stalls, and
# that no taint bit other than the expected out-of-tree/unsigned ones was
# set between the first and the last step. Prints the matching lines.
nvq_check_console_clean() {
	local log_file=$1
	local pattern matches
	local -a grep_args=()
	local failed=0

	for pattern in "${NVQ_SPLAT_PATTERNS[@]}"; do
		grep_args+=(-e "$pattern")
	done
	matches=$(grep -nE "${grep_args[@]}" "$log_file" || true)
	if [[ -n $matches ]]; then
		echo "kernel warning or error lines in $log_file:"
		echo "$matches" | head -n 60
		failed=1
	fi

	nvq_check_taint "$log_file" || failed=1
	return "$failed"
}

# Check that the steps of a boot set no taint bits other than those of
# NVQ_EXPECTED_TAINT_MASK and EXTRA_MASK, from its NVQ-TAINT markers.
nvq_check_taint() {
	local log_file=$1 extra_mask=${2:-0}
	local kernel_log taint_before taint_after new_taint

	kernel_log=$(nvq_kernel_log "$log_file")
	taint_before=$(sed -n 's/.*NVQ-TAINT before=\([0-9]*\).*/\1/p' <<<"$kernel_log" | head -n 1)
	taint_after=$(sed -n 's/.*NVQ-TAINT after=\([0-9]*\).*/\1/p' <<<"$kernel_log" | head -n 1)
	if [[ -z $taint_before || -z $taint_after ]]; then
		echo "taint markers missing in $log_file (before='$taint_before' after='$taint_after')"
		return 1
	fi
	new_taint=$(((taint_after & ~taint_before) & ~(NVQ_EXPECTED_TAINT_MASK | extra_mask)))
	if ((new_taint != 0)); then
		echo "unexpected taint bits set: $new_taint (tainted before=$taint_before after=$taint_after)"
		return 1
	fi
}

# Check that step kmemleak_scan ran both scans and that the report it copied
# to the kernel log lists no unreferenced object. Prints the report.
nvq_check_kmemleak() {
	local kernel_log=$1
	local report leak_count

	nvq_check_step_values "$kernel_log" kmemleak_scan "rc=0" || return 1
	report=$(sed -n 's/.*NVQ-KMEMLEAK //p' <<<"$kernel_log")
	leak_count=$(grep -c 'unreferenced object' <<<"$report" || true)
	if ((leak_count > 0)); then
		echo "kmemleak reported $leak_count unreferenced objects:"
		nvq_print_head "$report" 60
		return 1
	fi
}

# Check that the guest saw the NUMA nodes that TOPOLOGY configures in QEMU.
nvq_check_guest_nodes() {
	local kernel_log=$1 topology=$2
	local expected online

	expected=$(nvq_topology_nodes "$topology")
	online=$(sed -n 's/.*NVQ-NODES online=\([0-9,-]*\).*/\1/p' <<<"$kernel_log" | head -n 1)
	if [[ $online == "$expected" ]]; then
		return 0
	fi
	echo "online NUMA nodes in the guest: '${online:-no NVQ-NODES line}' (expected '$expected')"
	return 1
}

# Check that the guest ran all steps and dumped dmesg completely before
# QEMU exited, and that QEMU exited by itself before the timeout. TIMEOUT,
# the boot timeout in seconds, is only printed.
nvq_check_boot_finished() {
	local log_file=$1 qemu_status=$2 timeout=${3:-$NVQ_BOOT_TIMEOUT}

	if ((qemu_status == 124 || qemu_status == 137)); then
		echo "boot timed out after $timeout s. Last console lines:"
		tail -n 10 "$log_file"
		return 1
	fi
	if ! grep -q 'NVQ-DONE' "$log_file"; then
		echo "QEMU exited with status $qemu_status before the end marker NVQ-DONE. Last console lines:"
		tail -n 10 "$log_file"
		return 1
	fi
	if ! grep -q 'NVQ-DMESG-END' "$log_file"; then
		echo "the dmesg dump is incomplete: NVQ-DMESG-END is missing from $log_file"
		return 1
	fi
	if ((qemu_status != 0)); then
		echo "QEMU exited with status $qemu_status"
		return 1
	fi
}

NVQ_STRESS_PHASES=(producers rescheduling "flush race" "stop race" cycles)

# Print the PROBLEMS that a check of step STEP found, then the first
# MAX_LINES of the step's kernel log LINES.
nvq_print_step_problems() {
	local step=$1 lines=$2 max_lines=$3
	shift 3

	printf '%s\n' "$@"
	echo "kernel log of step $step:"
	nvq_print_head "$lines" "$max_lines"
}

# Check that step STEP loaded and unloaded the stress module and that it
# passed: one "passed" line per phase, the verdict line, and no FAIL line.
# Prints the phase and verdict lines with their figures.
nvq_check_stress() {
	local kernel_log=$1 step=$2
	local lines phase
	local -a problems=()

	nvq_check_step_values "$kernel_log" "$step" "rc=0 stress=no" || return 1
	lines=$(nvq_step_lines "$kernel_log" "$step")
	for phase in "${NVQ_STRESS_PHASES[@]}"; do
		if ! grep -q "nvq_stress: $phase: passed: " <<<"$lines"; then
			problems+=("no 'passed' line of phase '$phase'")
		fi
	done
	if ! grep -qE "nvq_stress: passed: ${#NVQ_STRESS_PHASES[@]} phases, " <<<"$lines"; then
		problems+=("no verdict 'nvq_stress: passed: ${#NVQ_STRESS_PHASES[@]} phases, ...'")
	fi
	if grep -qE 'nvq_stress: .*(FAIL|FAILED)' <<<"$lines"; then
		problems+=("FAIL lines from the stress test")
	fi

	if ((${#problems[@]} == 0)); then
		grep -E 'nvq_stress: (.*: )?passed: ' <<<"$lines" | sed 's/^\[[^]]*\] //'
		return 0
	fi
	nvq_print_step_problems "$step" "$lines" 60 "${problems[@]}"
	return 1
}

# Check that step stress_idle passed: the stress module's idle queues
# neither ran nor woke, and the hung-task detector stayed quiet (the
# console check fails on its reports).
nvq_check_stress_idle() {
	local kernel_log=$1
	local lines

	nvq_check_step_values "$kernel_log" stress_idle "rc=0 stress=no" || return 1
	lines=$(nvq_step_lines "$kernel_log" stress_idle)
	if ! grep -q 'nvq_stress: idle: passed: ' <<<"$lines" ||
		grep -qE 'nvq_stress: .*FAIL' <<<"$lines"; then
		echo "no 'nvq_stress: idle: passed:' line, or a FAIL line, in step stress_idle:"
		nvq_print_head "$lines" 40
		return 1
	fi
	grep 'nvq_stress: idle: passed: ' <<<"$lines" | sed 's/^\[[^]]*\] //'
}

# Check that step stress_churn loaded and unloaded the stress module
# CYCLES times without a failure, and that each unload logged a passed
# line.
nvq_check_stress_churn() {
	local kernel_log=$1 cycles=$2
	local lines marker passed_count

	nvq_check_step_values "$kernel_log" stress_churn "rc=0 stress=no" || return 1
	lines=$(nvq_step_lines "$kernel_log" stress_churn)
	marker=$(grep -o 'NVQ-STRESS-CHURN .*' <<<"$lines" | head -n 1)
	passed_count=$(grep -c 'nvq_stress: churn: passed: ' <<<"$lines" || true)
	if [[ $marker != "NVQ-STRESS-CHURN cycles=$cycles failures=0" ]] ||
		((passed_count != cycles)) || grep -qE 'nvq_stress: .*FAIL' <<<"$lines"; then
		echo "expected $cycles cycles without failures and $cycles passed lines;" \
			"got '${marker:-no NVQ-STRESS-CHURN line}' and $passed_count passed lines:"
		grep -E 'NVQ-STRESS-CHURN|nvq_stress: .*FAIL' <<<"$lines" | head -n 40
		return 1
	fi
	echo "$marker, $passed_count passed lines; last one:"
	grep 'nvq_stress: churn: passed: ' <<<"$lines" | tail -n 1 | sed 's/^\[[^]]*\] //'
}
