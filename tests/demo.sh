#!/bin/bash
#
# Build the module for the Debian 6.12 generic kernel that the metapackage
# linux-image-6.12-amd64 depends on, boot that kernel in QEMU with two NUMA
# nodes, load the module once (it runs its self-test at load) and print the
# module's kernel log lines. Exits 0 when the self-test passed and the
# console log shows no kernel warning.
#
# Run as root on Debian 12: it installs QEMU, busybox and the kernel with
# apt-get. tests/run-tests.sh runs the whole matrix.

set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_KERNEL_METAPACKAGE=linux-image-6.12-amd64
DEMO_TOPOLOGY=numa2
DEMO_STEPS=load1,unload1

main() {
	local release build_output initrd log_file kernel_log check_output
	local qemu_status=0 failed=0

	if ((EUID != 0)); then
		nvq_die "run as root: the demo installs packages with apt-get"
	fi

	nvq_install_host_tools_and_kernels "$DEMO_KERNEL_METAPACKAGE"
	release=$(nvq_kernel_release "$DEMO_KERNEL_METAPACKAGE")
	mkdir -p "$NVQ_LOG_DIR"

	nvq_log "building the module for $release"
	if ! build_output=$(nvq_build_module "$release" "$NVQ_LOG_DIR/build-$release.log" 2>&1); then
		echo "$build_output"
		nvq_die "module build failed for $release"
	fi
	initrd=$NVQ_CACHE/initramfs/$release.cpio.gz
	nvq_build_initramfs "$(nvq_module_path "$release")" "$initrd"

	log_file=$NVQ_LOG_DIR/demo-$release-$DEMO_TOPOLOGY.log
	nvq_log "booting $release ($DEMO_TOPOLOGY) in QEMU, console log: $log_file"
	nvq_boot "$release" "$initrd" "$DEMO_TOPOLOGY" "$DEMO_STEPS" "$log_file" || qemu_status=$?
	kernel_log=$(nvq_kernel_log "$log_file")

	echo "Kernel log lines of the module at load:"
	nvq_step_lines "$kernel_log" load1 | grep "$NVQ_MODULE_NAME:" || echo "(none)"
	echo

	if ! check_output=$(nvq_check_self_test_load "$kernel_log" load1); then
		echo "$check_output"
		failed=1
	fi
	if ! check_output=$(nvq_check_console_clean "$log_file"); then
		echo "$check_output"
		failed=1
	fi
	if ! check_output=$(nvq_check_boot_finished "$log_file" "$qemu_status"); then
		echo "$check_output"
		failed=1
	fi

	if ((failed)); then
		echo "FAIL: the self-test on $release failed or the kernel reported errors (see above). Console log: $log_file"
		return 1
	fi
	echo "PASS: the self-test passed on $release. Console log: $log_file"
}

main "$@"
