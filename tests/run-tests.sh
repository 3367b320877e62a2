#!/bin/bash
#
# Run the QEMU test matrix: build the module for each Debian kernel in
# NVQ_MATRIX, boot every entry with a busybox initramfs and check each load
# and unload step, the self-test verdicts and the console log. Prints one
# PASS or FAIL line per check and closes with "N passed, N failed".
# Console logs of the last run stay in tests/logs/.
#
# Run as root on Debian 12: it installs the host tools and kernels with
# apt-get. The environment settings are listed in tests/lib.sh.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR source=static-checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/static-checks.sh"

# One boot per line: the kernel image metapackage, whose dependency names
# the kernel release to boot, and the guest topology from NVQ_TOPOLOGIES in
# lib.sh. The matching linux-headers-* metapackage is installed with it.
NVQ_MATRIX=(
	"linux-image-amd64 numa2"
	"linux-image-6.12-amd64 numa2"
	"linux-image-6.12-amd64 numa1"
	"linux-image-rt-amd64 numa2"
	"linux-image-6.12-rt-amd64 numa2"
)

# Steps that guest-init.sh runs in every boot of the suite.
NVQ_SUITE_STEPS=load1,unload1,load2,unload2,consumer_alone,load_no_self_test
NVQ_SUITE_STEPS+=,consumer_load,unload_in_use,consumer_unload,unload_no_self_test

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

# Boot one matrix entry and report its checks. When skip_reason is set, it
# only prints the SKIP lines.
run_boot() {
	local release=$1 topology=$2 initrd=$3
	local log_file kernel_log="" boot_start qemu_status=0
	local label="$release $topology"

	log_file=$NVQ_LOG_DIR/$release-$topology.log
	if [[ -z $skip_reason ]]; then
		nvq_log "booting $label, console log: $log_file"
		boot_start=$SECONDS
		nvq_boot "$release" "$initrd" "$topology" "$NVQ_SUITE_STEPS" "$log_file" || qemu_status=$?
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
	run_check "$label: guest NUMA nodes" nvq_check_guest_nodes "$kernel_log" "$topology"
	run_check "$label: console log clean" nvq_check_console_clean "$log_file"
	run_check "$label: boot finished in time" nvq_check_boot_finished "$log_file" "$qemu_status"
}

main() {
	local entry image_metapackage topology release build_output
	local -a image_metapackages=()
	local -A release_of=() build_ok=()
	local suite_start=$SECONDS

	if ((EUID != 0)); then
		nvq_die "run as root: the tests install packages with apt-get"
	fi

	for entry in "${NVQ_MATRIX[@]}"; do
		read -r image_metapackage topology <<<"$entry"
		nvq_topology_args "$topology" >/dev/null
		if [[ " ${image_metapackages[*]} " != *" $image_metapackage "* ]]; then
			image_metapackages+=("$image_metapackage")
		fi
	done
	nvq_install_host_tools_and_kernels "${image_metapackages[@]}"
	nvq_install_packages "${NVQ_CHECK_PACKAGES[@]}"

	rm -rf "$NVQ_LOG_DIR"
	mkdir -p "$NVQ_LOG_DIR"

	# Build the module and the initramfs once per kernel.
	for image_metapackage in "${image_metapackages[@]}"; do
		release=$(nvq_kernel_release "$image_metapackage")
		release_of[$image_metapackage]=$release

		nvq_log "building the module for $release"
		if build_output=$(nvq_build_module "$release" "$NVQ_LOG_DIR/build-$release.log" 2>&1); then
			build_ok[$release]=1
			nvq_build_initramfs "$(nvq_module_path "$release")" "$NVQ_CACHE/initramfs/$release.cpio.gz" \
				"$(nvq_consumer_path "$release")"
		else
			build_ok[$release]=0
		fi
		report "${build_ok[$release]}" "$release: module build" "$build_output"
	done

	skip_reason=
	nvq_run_static_checks run_check "${release_of[@]}"

	for entry in "${NVQ_MATRIX[@]}"; do
		read -r image_metapackage topology <<<"$entry"
		release=${release_of[$image_metapackage]}
		skip_reason=
		if ((build_ok[$release] == 0)); then
			skip_reason="module build failed"
		fi
		run_boot "$release" "$topology" "$NVQ_CACHE/initramfs/$release.cpio.gz"
	done

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
