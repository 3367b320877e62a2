#!/bin/bash
#
# Run the QEMU test matrix. For each kernel in NVQ_MATRIX (Debian kernels
# and a debug kernel built from source) it builds the module, boots each
# entry with a busybox initramfs and checks each load and unload step, the
# self-test verdicts and the console log. Prints one PASS or FAIL line per
# check and closes with "N passed, N failed". Console logs of the last run
# stay in tests/logs/.
#
# Run as root on Debian 12: it installs the host tools and kernels with
# apt-get. The environment settings are listed in tests/lib.sh, plus:
#   NVQ_KERNELS             space-separated kernels of NVQ_MATRIX to boot,
#                           e.g. "debug-6.12" (default: all)
#   NVQ_DEBUG_BOOT_TIMEOUT  seconds a boot of the debug kernel may take (420)

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=static-checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/static-checks.sh"
# shellcheck source-path=SCRIPTDIR source=debug-kernel/build.sh
source "$(dirname "${BASH_SOURCE[0]}")/debug-kernel/build.sh"
# shellcheck source-path=SCRIPTDIR source=packaging.sh
source "$(dirname "${BASH_SOURCE[0]}")/packaging.sh"
# shellcheck source-path=SCRIPTDIR source=faults.sh
source "$(dirname "${BASH_SOURCE[0]}")/faults.sh"

# One boot per line: the kernel and the guest topology from NVQ_TOPOLOGIES
# in lib.sh. The kernel is either a kernel image metapackage, whose
# dependency names the kernel release to boot (the matching linux-headers-*
# metapackage is installed with it), or a kernel of NVQ_TEST_KERNELS.
NVQ_MATRIX=(
	"linux-image-amd64 numa2"
	"linux-image-6.12-amd64 numa2"
	"linux-image-6.12-amd64 numa1"
	"linux-image-rt-amd64 numa2"
	"linux-image-6.12-rt-amd64 numa2"
	"debug-6.12 numa2"
	"race-6.12 numa2"
)

# Kernels that tests/debug-kernel/build.sh builds from Debian's
# linux-source-6.12, with the build.sh flavour of each. The debug kernel
# has lockdep, KASAN, kmemleak, UBSAN and fault injection; its boots also
# scan for memory leaks after the last step. The race kernel has KCSAN.
NVQ_DEBUG_KERNEL=debug-6.12
NVQ_RACE_KERNEL=race-6.12
declare -A NVQ_TEST_KERNELS=([$NVQ_DEBUG_KERNEL]=debug [$NVQ_RACE_KERNEL]=race)
# Under TCG with KASAN and lockdep one self-test run blocks insmod for about
# 20 s, and a whole boot with the stress steps took 251 s on a busy 2-core
# host (numa2), so both timeouts stay well above that. The race kernel's
# self-test took 4-10 s.
declare -A NVQ_TEST_KERNEL_HUNG_TASK_TIMEOUT=([$NVQ_DEBUG_KERNEL]=120 [$NVQ_RACE_KERNEL]=60)
declare -A NVQ_TEST_KERNEL_BOOT_TIMEOUT=(
	[$NVQ_DEBUG_KERNEL]=${NVQ_DEBUG_BOOT_TIMEOUT:-420}
	[$NVQ_RACE_KERNEL]=300
)

# Steps that guest-init.sh runs in every boot of the suite.
NVQ_SUITE_STEPS=load1,unload1,load2,unload2,consumer_alone,load_no_self_test
NVQ_SUITE_STEPS+=,consumer_load,unload_in_use,consumer_unload,unload_no_self_test
# The stress test, with a shorter run (stress_debug) on the slower debug
# kernel. stress_churn loads and unloads it NVQ_STRESS_CHURN_CYCLES times.
# The stress steps keep nv-kthread-q loaded until stress_unload.
NVQ_DEBUG_SUITE_STEPS=$NVQ_SUITE_STEPS,stress_debug,stress_idle,stress_churn,stress_unload,kmemleak_scan
NVQ_SUITE_STEPS+=,stress,stress_idle,stress_churn,stress_unload
NVQ_STRESS_CHURN_CYCLES=100
# Debian kernels also load the module that DKMS installed, with modprobe.
NVQ_DISTRO_SUITE_STEPS=$NVQ_SUITE_STEPS,dkms_modprobe,dkms_unload
# The race kernel first adds the kernel functions whose races KCSAN should
# not report to KCSAN's filter list (see guest-init.sh).
NVQ_RACE_SUITE_STEPS=kcsan_filter,$NVQ_SUITE_STEPS

passed=0
failed=0
skipped=0
# When not empty, run_check prints SKIP lines with this reason instead of
# running the checks.
skip_reason=

# Print a PASS or FAIL line for LABEL and count it. DETAILS, when not empty,
# are printed indented below the line.
report() {
	local ok=$1 label=$2 details=${3:-}

	if ((ok)); then
		echo "PASS $label"
		passed=$((passed + 1))
	else
		echo "FAIL $label"
		failed=$((failed + 1))
	fi
	if [[ -n $details ]]; then
		printf '    %s\n' "${details//$'\n'/$'\n    '}"
	fi
}

# Run a check function and report its result with its output as details.
run_check() {
	local label=$1
	local output
	shift

	if [[ -n $skip_reason ]]; then
		echo "SKIP $label ($skip_reason)"
		skipped=$((skipped + 1))
		return 0
	fi
	if output=$("$@" 2>&1); then
		report 1 "$label" "$output"
	else
		report 0 "$label" "$output"
	fi
}

# Boot one matrix entry with the guest-init.sh steps STEPS and report its
# checks. When skip_reason is set, it only prints the SKIP lines.
run_boot() {
	local release=$1 topology=$2 initrd=$3 steps=$4
	local log_file kernel_log="" boot_start qemu_status=0
	local label="$release $topology"

	log_file=$NVQ_LOG_DIR/$release-$topology.log
	if [[ -z $skip_reason ]]; then
		nvq_log "booting $label, console log: $log_file"
		boot_start=$SECONDS
		nvq_boot "$release" "$initrd" "$topology" "$steps" "$log_file" || qemu_status=$?
		nvq_log "boot of $label took $((SECONDS - boot_start)) s, QEMU exit status $qemu_status"
		kernel_log=$(nvq_kernel_log "$log_file")
	fi

	run_check "$label: first load self-test" nvq_check_self_test_load "$kernel_log" load1
	run_check "$label: first unload" nvq_check_unload "$kernel_log" unload1 load1
	run_check "$label: second load self-test" nvq_check_self_test_load "$kernel_log" load2
	run_check "$label: second unload" nvq_check_unload "$kernel_log" unload2 load2
	run_check "$label: load with run_self_test=0" \
		nvq_check_load_without_self_test "$kernel_log" load_no_self_test unload_no_self_test
	run_check "$label: consumer without nv-kthread-q" nvq_check_consumer_alone "$kernel_log"
	run_check "$label: consumer load" nvq_check_step_values "$kernel_log" consumer_load "rc=0 consumer=yes"
	run_check "$label: unload refused while in use" \
		nvq_check_step_values "$kernel_log" unload_in_use "loaded=yes consumer=yes"
	run_check "$label: consumer work and unload" nvq_check_consumer_unload "$kernel_log"
	if [[ ,$steps, == *,dkms_modprobe,* ]]; then
		run_check "$label: modprobe of the DKMS module" \
			nvq_check_self_test_load "$kernel_log" dkms_modprobe
		run_check "$label: unload of the DKMS module" \
			nvq_check_unload "$kernel_log" dkms_unload dkms_modprobe
	fi
	if [[ ,$steps, == *,stress,* ]]; then
		run_check "$label: stress test" nvq_check_stress "$kernel_log" stress
	fi
	if [[ ,$steps, == *,stress_debug,* ]]; then
		run_check "$label: stress test" nvq_check_stress "$kernel_log" stress_debug
	fi
	if [[ ,$steps, == *,stress_idle,* ]]; then
		run_check "$label: stress test, idle queues" nvq_check_stress_idle "$kernel_log"
	fi
	if [[ ,$steps, == *,stress_churn,* ]]; then
		run_check "$label: stress test, load and unload churn" \
			nvq_check_stress_churn "$kernel_log" "$NVQ_STRESS_CHURN_CYCLES"
	fi
	if [[ ,$steps, == *,stress_unload,* ]]; then
		run_check "$label: unload after the stress test" \
			nvq_check_unload "$kernel_log" stress_unload stress_churn
	fi
	if [[ ,$steps, == *,kmemleak_scan,* ]]; then
		run_check "$label: KUnit suite results" nvq_check_kunit "$kernel_log"
		run_check "$label: kmemleak scan" nvq_check_kmemleak "$kernel_log"
	fi
	run_check "$label: guest NUMA nodes" nvq_check_guest_nodes "$kernel_log" "$topology"
	run_check "$label: console log clean" nvq_check_console_clean "$log_file"
	run_check "$label: boot finished in time" \
		nvq_check_boot_finished "$log_file" "$qemu_status" "$(nvq_boot_timeout "$release")"
}

# Releases of the kernels of NVQ_TEST_KERNELS that prepare_test_kernel
# built, by kernel name, and the debug kernel's release.
declare -A test_kernel_release=()
debug_release=

# Build KERNEL of NVQ_TEST_KERNELS, or reuse the cached one, record its
# release and register the kernel's image, build tree and timeouts under it.
prepare_test_kernel() {
	local kernel=$1
	local flavour=${NVQ_TEST_KERNELS[$kernel]}
	local release

	nvq_test_kernel_build "$flavour" || return 1
	release=$(nvq_test_kernel_release "$flavour") || return 1
	test_kernel_release[$kernel]=$release
	NVQ_RELEASE_IMAGE[$release]=$(nvq_test_kernel_image "$flavour")
	NVQ_RELEASE_TREE[$release]=$(nvq_test_kernel_tree "$flavour")
	NVQ_RELEASE_HUNG_TASK_TIMEOUT[$release]=${NVQ_TEST_KERNEL_HUNG_TASK_TIMEOUT[$kernel]}
	NVQ_RELEASE_BOOT_TIMEOUT[$release]=${NVQ_TEST_KERNEL_BOOT_TIMEOUT[$kernel]}
}

# Boot the debug kernel once more with the lockdep probe, which must make
# lockdep report a flush that holds a lock its callbacks take. The report
# is the expected result here, so this boot skips the clean-log check.
run_lockdep_probe() {
	local release=$1
	local initrd=$NVQ_CACHE/initramfs/$release-lockdep-probe.cpio.gz
	local log_file=$NVQ_LOG_DIR/$release-lockdep-probe.log
	local label="$release lockdep probe"
	local output kernel_log qemu_status=0

	if ! output=$(nvq_build_test_module_initramfs "$release" lockdep-probe \
		"$NVQ_CACHE/initramfs/$release.cpio.gz" "$initrd" \
		"$NVQ_LOG_DIR/build-$release-lockdep-probe.log" 2>&1); then
		report 0 "$label: build" "$output"
		return
	fi
	nvq_log "booting $label, console log: $log_file"
	nvq_boot "$release" "$initrd" numa1 load_no_self_test,lockdep_probe "$log_file" ||
		qemu_status=$?
	kernel_log=$(nvq_kernel_log "$log_file")

	run_check "$label: lockdep reports the flush" nvq_check_lockdep_probe "$kernel_log"
	run_check "$label: boot finished in time" \
		nvq_check_boot_finished "$log_file" "$qemu_status" "$(nvq_boot_timeout "$release")"
}

# Boot the debug kernel once more with tests/faults: allocation failures
# injected into queue init, then a queue blocked by a stuck callback. The
# warnings and hung-task reports those provoke are expected there, so this
# boot has checks of its own instead of the clean-log check.
run_faults_boot() {
	local release=$1
	local initrd=$NVQ_CACHE/initramfs/$release-faults.cpio.gz
	local log_file=$NVQ_LOG_DIR/$release-faults.log
	local label="$release faults"
	local output kernel_log qemu_status=0

	if ! output=$(nvq_build_test_module_initramfs "$release" faults \
		"$NVQ_CACHE/initramfs/$release.cpio.gz" "$initrd" \
		"$NVQ_LOG_DIR/build-$release-faults.log" 2>&1); then
		report 0 "$label: build" "$output"
		return
	fi
	nvq_log "booting $label, console log: $log_file"
	nvq_boot "$release" "$initrd" numa2 "$NVQ_FAULTS_STEPS" "$log_file" ||
		qemu_status=$?
	kernel_log=$(nvq_kernel_log "$log_file")

	run_check "$label: failed inits under fault injection" nvq_check_faults_inject "$kernel_log"
	run_check "$label: flush behind a stuck callback" nvq_check_faults_stuck "$kernel_log"
	run_check "$label: kmemleak scan" nvq_check_kmemleak "$kernel_log"
	run_check "$label: console log clean outside the fault steps" \
		nvq_check_faults_console "$log_file"
	run_check "$label: boot finished in time" \
		nvq_check_boot_finished "$log_file" "$qemu_status" "$(nvq_boot_timeout "$release")"
}

# Keep only the NVQ_MATRIX entries whose kernel is one of KERNELS.
select_matrix_entries() {
	local kernels=$1
	local entry kernel topology
	local -a selected=()

	for entry in "${NVQ_MATRIX[@]}"; do
		read -r kernel topology <<<"$entry"
		if [[ " $kernels " == *" $kernel "* ]]; then
			selected+=("$entry")
		fi
	done
	if ((${#selected[@]} == 0)); then
		nvq_die "no NVQ_MATRIX entry has a kernel in NVQ_KERNELS='$kernels'"
	fi
	NVQ_MATRIX=("${selected[@]}")
}

main() {
	local entry kernel topology release build_output steps kernel_output_file
	local -a kernels=() image_metapackages=() distro_releases=()
	local -A release_of=() build_ok=() dkms_ok=()
	local suite_start=$SECONDS kernel_start

	if ((EUID != 0)); then
		nvq_die "run as root: the tests install packages with apt-get"
	fi

	if [[ -n ${NVQ_KERNELS:-} ]]; then
		select_matrix_entries "$NVQ_KERNELS"
	fi
	for entry in "${NVQ_MATRIX[@]}"; do
		read -r kernel topology <<<"$entry"
		nvq_topology_args "$topology" >/dev/null
		if [[ " ${kernels[*]} " != *" $kernel "* ]]; then
			kernels+=("$kernel")
			if [[ -z ${NVQ_TEST_KERNELS[$kernel]:-} ]]; then
				image_metapackages+=("$kernel")
			fi
		fi
	done
	nvq_install_host_tools_and_kernels "${image_metapackages[@]}"
	nvq_install_packages "${NVQ_CHECK_PACKAGES[@]}" "${NVQ_PACKAGING_PACKAGES[@]}"
	# DKMS installs into this machine's /lib/modules; undo it however the
	# suite ends. That would also remove a copy the user installed, so
	# refuse to start while one is there.
	if [[ -n $(dkms status -m "$NVQ_DKMS_NAME" 2>/dev/null) ]]; then
		nvq_die "nv-kthread-q is already installed with DKMS; the suite installs and removes its own copy. Remove yours first (make dkms-remove) and run the suite again."
	fi
	trap nvq_dkms_remove_all EXIT
	mkdir -p "$NVQ_CACHE/packaging"
	# Installed here rather than in nvq_test_kernel_build, because an
	# apt-get failure there would end the suite with its message in a file.
	for kernel in "${kernels[@]}"; do
		if [[ -n ${NVQ_TEST_KERNELS[$kernel]:-} ]]; then
			nvq_install_packages "${NVQ_TEST_KERNEL_PACKAGES[@]}"
			break
		fi
	done

	rm -rf "$NVQ_LOG_DIR"
	mkdir -p "$NVQ_LOG_DIR"

	# Build the module and the initramfs once per kernel.
	for kernel in "${kernels[@]}"; do
		if [[ -n ${NVQ_TEST_KERNELS[$kernel]:-} ]]; then
			nvq_log "building kernel $kernel unless it is cached, log: $(nvq_test_kernel_dir "${NVQ_TEST_KERNELS[$kernel]}")/build.log"
			kernel_start=$SECONDS
			# prepare_test_kernel runs in this shell, not in $(...), so
			# that the settings it registers stay. Its output goes to a
			# file instead.
			kernel_output_file=$NVQ_LOG_DIR/$kernel-kernel-build.out
			if ! prepare_test_kernel "$kernel" >"$kernel_output_file" 2>&1; then
				report 0 "$kernel: kernel build" "$(<"$kernel_output_file")"
				# Without a kernel there is no release, so
				# release_of and build_ok use the kernel's name.
				release_of[$kernel]=$kernel
				build_ok[$kernel]=0
				dkms_ok[$kernel]=0
				continue
			fi
			report 1 "$kernel: kernel build" "$(<"$kernel_output_file")"
			release=${test_kernel_release[$kernel]}
			nvq_log "kernel $release ready after $((SECONDS - kernel_start)) s"
			if [[ $kernel == "$NVQ_DEBUG_KERNEL" ]]; then
				debug_release=$release
			fi
		else
			release=$(nvq_kernel_release "$kernel")
			distro_releases+=("$release")
		fi
		release_of[$kernel]=$release

		nvq_log "building the module for $release"
		if build_output=$(nvq_build_module "$release" "$NVQ_LOG_DIR/build-$release.log" 2>&1); then
			build_ok[$release]=1
		else
			build_ok[$release]=0
		fi
		report "${build_ok[$release]}" "$release: module build" "$build_output"

		dkms_ok[$release]=0
		if [[ -z ${NVQ_TEST_KERNELS[$kernel]:-} ]]; then
			nvq_log "installing the module for $release with DKMS"
			if build_output=$(nvq_check_dkms_install "$release" 2>&1); then
				dkms_ok[$release]=1
			fi
			report "${dkms_ok[$release]}" "$release: dkms build and install" "$build_output"
		fi
		if ((build_ok[$release])); then
			nvq_build_initramfs "$(nvq_module_path "$release")" "$NVQ_CACHE/initramfs/$release.cpio.gz" \
				"$(nvq_consumer_path "$release")" \
				"$( ((dkms_ok[$release])) && echo "$release")"
		fi
	done

	# The static checks build against the Debian kernels' headers only.
	skip_reason=
	nvq_run_static_checks run_check "${distro_releases[@]}"
	run_check "dkms.conf version matches Kbuild" nvq_check_versions_match
	for release in "${distro_releases[@]}"; do
		run_check "$release: make install and a consumer built against it" \
			nvq_check_install_and_consumer_build "$release"
	done
	# The DKMS builds above created the signing key that make sign uses.
	if ((${#distro_releases[@]} > 0)); then
		run_check "${distro_releases[0]}: make sign" nvq_check_sign "${distro_releases[0]}"
	fi

	for entry in "${NVQ_MATRIX[@]}"; do
		read -r kernel topology <<<"$entry"
		release=${release_of[$kernel]}
		skip_reason=
		if ((build_ok[$release] == 0)); then
			skip_reason="module build failed"
		fi
		steps=$NVQ_SUITE_STEPS
		if ((dkms_ok[$release])); then
			steps=$NVQ_DISTRO_SUITE_STEPS
		fi
		if [[ $kernel == "$NVQ_DEBUG_KERNEL" ]]; then
			steps=$NVQ_DEBUG_SUITE_STEPS
		elif [[ $kernel == "$NVQ_RACE_KERNEL" ]]; then
			steps=$NVQ_RACE_SUITE_STEPS
		fi
		if [[ -n ${NVQ_TEST_KERNELS[$kernel]:-} && $release == "$kernel" ]]; then
			skip_reason="kernel build failed"
		fi
		run_boot "$release" "$topology" "$NVQ_CACHE/initramfs/$release.cpio.gz" "$steps"
	done

	if [[ -n $debug_release ]] && ((build_ok[$debug_release])); then
		run_lockdep_probe "$debug_release"
		run_faults_boot "$debug_release"
	fi

	if ((${#distro_releases[@]} > 0)); then
		run_check "dkms remove leaves nothing behind" nvq_check_dkms_remove
	fi

	nvq_log "console and build logs: $NVQ_LOG_DIR"
	nvq_log "suite took $((SECONDS - suite_start)) s"
	if ((skipped > 0)); then
		echo "$passed passed, $failed failed, $skipped skipped"
	else
		echo "$passed passed, $failed failed"
	fi
	((failed == 0 && skipped == 0))
}

main "$@"
