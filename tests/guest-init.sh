#!/bin/sh
# shellcheck shell=sh
#
# /init of the test initramfs (busybox sh). Runs the load and unload steps
# named by `nvq.steps=` on the kernel command line, dumps the whole kernel
# log and powers off. The host parses the console log for these lines:
#
#   NVQ-STEP-BEGIN <step>                  a step starts
#   NVQ-STEP <step> rc=<n> loaded=<yes|no> consumer=<yes|no> stress=<yes|no>
#                                          a step ended with exit status n;
#                                          loaded, consumer and stress tell
#                                          whether nv_kthread_q, nvq_consumer
#                                          and nvq_stress are loaded
#                                          afterwards
#   NVQ-STRESS-CHURN cycles=<n> failures=<n>
#                                          load and unload cycles of the
#                                          stress module (step stress_churn)
#   NVQ-TAINT <when>=<n>                   /proc/sys/kernel/tainted
#   NVQ-NODES online=<list>                online NUMA nodes, e.g. 0-1
#   NVQ-KMEMLEAK <line>                    a line of the kmemleak report
#                                          (step kmemleak_scan)
#   NVQ-STEPS-END                          all steps ran, the dump follows
#   NVQ-DMESG-BEGIN ... NVQ-DMESG-END      the whole dmesg
#   NVQ-DONE                               the dump is complete
#
# Markers go to /dev/kmsg rather than to stdout, so the kernel prints them
# whole and in order with its own messages. Output written to the console
# from user space, such as the dmesg dump, can be overtaken by kernel lines
# in the console log, so the host parses only the kernel's lines up to
# NVQ-STEPS-END.

MODULE_FILE=/nv-kthread-q.ko
MODULE_NAME=nv_kthread_q
CONSUMER_FILE=/nvq-consumer.ko
CONSUMER_NAME=nvq_consumer
STRESS_FILE=/nvq-stress.ko
STRESS_NAME=nvq_stress
# Load and unload cycles of step stress_churn.
STRESS_CHURN_CYCLES=100
# Step stress_idle lowers the hung-task timeout to this many seconds and
# leaves the stress module's queues idle for this many ms, so that the
# detector scans the idle threads and the waiting insmod at least twice.
STRESS_IDLE_HUNG_TASK_TIMEOUT=2
STRESS_IDLE_MS=6000
FAULTS_FILE=/nvq-faults.ko
FAULTS_NAME=nvq_faults
DEFAULT_STEPS=load1,unload1,load2,unload2,load_no_self_test,unload_no_self_test
KMEMLEAK_FILE=/sys/kernel/debug/kmemleak
# Report lines copied to the kernel log, at most.
KMEMLEAK_MAX_LINES=200

/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

mark() {
	echo "NVQ-$*" >/dev/kmsg
}

module_state() {
	if [ -d "/sys/module/${1:-$MODULE_NAME}" ]; then
		echo yes
	else
		echo no
	fi
}

# Mount debugfs unless PATH already exists, then fail with a message naming
# OPTION, the kernel option that provides PATH, if it still does not.
require_debugfs_file() {
	path=$1
	option=$2

	if [ ! -e "$path" ]; then
		mount -t debugfs debugfs /sys/kernel/debug
	fi
	if [ ! -e "$path" ]; then
		echo "guest-init: $path not found: the kernel has no $option" >&2
		return 1
	fi
}

# Scan for leaks and copy the report to the kernel log. kmemleak reports an
# object only when it is older than 5 s and its contents did not change
# between two scans, so wait, then scan twice.
kmemleak_scan() {
	require_debugfs_file "$KMEMLEAK_FILE" CONFIG_DEBUG_KMEMLEAK || return 1
	sleep 6
	echo scan >"$KMEMLEAK_FILE" || return 1
	sleep 2
	echo scan >"$KMEMLEAK_FILE" || return 1

	cat "$KMEMLEAK_FILE" >/tmp/kmemleak || return 1
	head -n "$KMEMLEAK_MAX_LINES" /tmp/kmemleak | while IFS= read -r line; do
		mark "KMEMLEAK $line"
	done
	line_count=$(wc -l </tmp/kmemleak)
	if [ "$line_count" -gt "$KMEMLEAK_MAX_LINES" ]; then
		mark "KMEMLEAK ... $((line_count - KMEMLEAK_MAX_LINES)) more lines"
	fi
}

# Run nvq-faults.ko test=inject. failslab fails only the allocations that
# the test selects through fail_nth, and only once ignore-gfp-wait is N,
# because the queue allocates with GFP_KERNEL. verbose=1 logs each fault
# without a stack trace. The test calls schedule and flush on a queue whose
# init failed, and both warn by contract, so panic_on_warn is off meanwhile.
faults_inject() {
	failslab=/sys/kernel/debug/failslab
	require_debugfs_file "$failslab" CONFIG_FAILSLAB || return 1
	echo N >"$failslab/ignore-gfp-wait" || return 1
	echo 1 >"$failslab/verbose" || return 1
	echo 0 >/proc/sys/kernel/panic_on_warn || return 1

	result=0
	insmod "$FAULTS_FILE" test=inject || result=$?

	echo 1 >/proc/sys/kernel/panic_on_warn
	echo Y >"$failslab/ignore-gfp-wait"
	if [ "$result" -eq 0 ]; then
		rmmod "$FAULTS_NAME" || result=$?
	fi
	return "$result"
}

# Run nvq-faults.ko test=stuck, which blocks a queue for 8 s, with a
# hung-task timeout of 2 s, so that the detector reports the flusher.
faults_stuck() {
	timeout_file=/proc/sys/kernel/hung_task_timeout_secs
	saved_timeout=$(cat "$timeout_file") || return 1
	echo 2 >"$timeout_file" || return 1

	result=0
	insmod "$FAULTS_FILE" test=stuck hold_ms=8000 || result=$?

	echo "$saved_timeout" >"$timeout_file"
	if [ "$result" -eq 0 ]; then
		rmmod "$FAULTS_NAME" || result=$?
	fi
	return "$result"
}

# Load nv-kthread-q without its self-test unless it is loaded. Each load on
# the debug kernel also runs the KUnit suite (about 20 s), so the stress
# steps leave the module loaded for the next one. Step stress_unload
# unloads it.
stress_load_module() {
	if [ "$(module_state)" = no ]; then
		insmod "$MODULE_FILE" run_self_test=0
	fi
}

# Run the stress module with the given parameters, then unload it.
stress_run() {
	stress_load_module || return 1

	result=0
	insmod "$STRESS_FILE" "$@" || result=$?
	if [ "$(module_state "$STRESS_NAME")" = yes ]; then
		rmmod "$STRESS_NAME" || result=$?
	fi
	return "$result"
}

# Leave the stress module's queues idle with a hung-task timeout shorter
# than the idle time, which reports any task stuck in D state meanwhile.
stress_idle() {
	timeout_file=/proc/sys/kernel/hung_task_timeout_secs
	if [ ! -w "$timeout_file" ]; then
		echo "guest-init: $timeout_file not found: the kernel has no hung-task detector" >&2
		return 1
	fi
	saved_timeout=$(cat "$timeout_file") || return 1
	echo "$STRESS_IDLE_HUNG_TASK_TIMEOUT" >"$timeout_file" || return 1

	result=0
	stress_run test=idle idle_ms="$STRESS_IDLE_MS" || result=$?

	echo "$saved_timeout" >"$timeout_file"
	return "$result"
}

# Load the stress module with test=churn and unload it, STRESS_CHURN_CYCLES
# times, and log how many loads or unloads failed.
stress_churn() {
	stress_load_module || return 1

	cycle=0
	failures=0
	while [ "$cycle" -lt "$STRESS_CHURN_CYCLES" ]; do
		if insmod "$STRESS_FILE" test=churn; then
			rmmod "$STRESS_NAME" || failures=$((failures + 1))
		else
			failures=$((failures + 1))
		fi
		cycle=$((cycle + 1))
	done
	mark "STRESS-CHURN cycles=$cycle failures=$failures"
	[ "$failures" -eq 0 ]
}

# Kernel functions whose data races KCSAN leaves out of its reports on the
# race kernel. KCSAN skips a report when the top stack frame of either
# access is one of them. Under TCG it reported races in these functions,
# which are kernel code that the module does not contain:
# - do_exit() sets PF_EXITING in the flags of an exiting thread while
#   kthread_stop() or the scheduler's load balancing reads them;
# - load balancing reads the CPU capacity while it changes;
# - a workqueue worker (the module uses none) reads a changing work item.
KCSAN_IGNORED_FUNCTIONS="do_exit sched_balance_find_src_group arch_scale_cpu_capacity"
KCSAN_IGNORED_FUNCTIONS="$KCSAN_IGNORED_FUNCTIONS process_scheduled_works"

# Add KCSAN_IGNORED_FUNCTIONS to KCSAN's report filter.
kcsan_filter() {
	kcsan_file=/sys/kernel/debug/kcsan
	require_debugfs_file "$kcsan_file" CONFIG_KCSAN || return 1
	for function in $KCSAN_IGNORED_FUNCTIONS; do
		echo "!$function" >"$kcsan_file" || return 1
	done
}

run_step() {
	step=$1
	rc=0

	mark "STEP-BEGIN $step"
	case $step in
	load1 | load2)
		insmod "$MODULE_FILE" || rc=$?
		;;
	load_no_self_test)
		insmod "$MODULE_FILE" run_self_test=0 || rc=$?
		;;
	unload1 | unload2 | unload_no_self_test | unload_in_use)
		rmmod "$MODULE_NAME" || rc=$?
		;;
	consumer_alone)
		insmod "$CONSUMER_FILE" || rc=$?
		;;
	consumer_load)
		insmod "$CONSUMER_FILE" || rc=$?
		# Let its fake interrupts run (200 of them, 0.5 ms apart).
		sleep 1
		;;
	consumer_unload)
		rmmod "$CONSUMER_NAME" || rc=$?
		;;
	dkms_modprobe)
		# busybox modprobe first hands a .ko.xz to the kernel as it is
		# ("Invalid ELF header magic"), then loads it decompressed.
		modprobe "$MODULE_NAME" || rc=$?
		;;
	dkms_unload)
		rmmod "$MODULE_NAME" || rc=$?
		;;
	lockdep_probe)
		insmod /nvq-lockdep-probe.ko || rc=$?
		;;
	kmemleak_scan)
		kmemleak_scan || rc=$?
		;;
	stress)
		# 6 s on Debian's 6.12 under TCG with 2 vCPUs on an idle host.
		stress_run duration_ms=2000 stop_rounds=100 cycles=10000 || rc=$?
		;;
	stress_debug)
		# KASAN and lockdep make the debug kernel several times slower,
		# so the timed phases are shorter there. Each init/stop cycle
		# also waits for an RCU grace period when lockdep frees the
		# queue's lock class key: 10,000 cycles took 163 s there
		# on a busy 2-core host.
		stress_run duration_ms=1000 stop_rounds=20 cycles=1000 || rc=$?
		;;
	stress_idle)
		stress_idle || rc=$?
		;;
	stress_churn)
		stress_churn || rc=$?
		;;
	stress_unload)
		rmmod "$MODULE_NAME" || rc=$?
		;;
	kcsan_filter)
		kcsan_filter || rc=$?
		;;
	faults_inject)
		faults_inject || rc=$?
		;;
	faults_stuck)
		faults_stuck || rc=$?
		;;
	*)
		echo "guest-init: unknown step '$step'" >&2
		rc=127
		;;
	esac
	mark "STEP $step rc=$rc loaded=$(module_state) consumer=$(module_state "$CONSUMER_NAME") stress=$(module_state "$STRESS_NAME")"
}

steps=$DEFAULT_STEPS
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case $arg in
	nvq.steps=*) steps=${arg#nvq.steps=} ;;
	esac
done

mark "NODES online=$(cat /sys/devices/system/node/online)"
mark "TAINT before=$(cat /proc/sys/kernel/tainted)"
for step in $(echo "$steps" | tr ',' ' '); do
	run_step "$step"
done
mark "TAINT after=$(cat /proc/sys/kernel/tainted)"
mark STEPS-END

echo NVQ-DMESG-BEGIN
dmesg
echo NVQ-DMESG-END
# poweroff -f does not wait for the console tty buffer to drain, so pause
# first. QEMU's UART applies no baud-rate delay: the dump of about 400 lines
# took under 0.2 s in the test runs.
sleep 1
mark DONE

poweroff -f
