#!/bin/sh
# shellcheck shell=sh
#
# /init of the benchmark initramfs (busybox sh). Loads nv-kthread-q without
# its self-test, then the benchmark module, which measures at load time and
# prints its results to the kernel log. Then dumps the kernel log and
# powers off.
#
# Uses the marker lines of tests/guest-init.sh, so that the host can parse
# the console log with the helpers of tests/lib.sh:
#
#   NVQ-STEP-BEGIN <step>, NVQ-STEP <step> rc=<n> loaded=<yes|no>
#   NVQ-TAINT before=<n>, NVQ-TAINT after=<n>
#   NVQ-STEPS-END, NVQ-DMESG-BEGIN ... NVQ-DMESG-END, NVQ-DONE
#
# and one more, before the steps:
#
#   NVQ-CLOCKSOURCE <name>   the clocksource the benchmark runs on
#
# Module parameters of the benchmark come from the kernel command line as
# nvq_bench.<name>=<value> words, which this script passes to insmod.

MODULE_FILE=/nv-kthread-q.ko
MODULE_NAME=nv_kthread_q
BENCH_FILE=/nvq-bench.ko
# The guest clocksource settles on tsc about 2 s after boot.
CLOCKSOURCE_WAIT_S=10

/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

mark() {
	echo "NVQ-$*" >/dev/kmsg
}

module_state() {
	if [ -d "/sys/module/$MODULE_NAME" ]; then
		echo yes
	else
		echo no
	fi
}

current_clocksource() {
	cat /sys/devices/system/clocksource/clocksource0/current_clocksource
}

bench_args=
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case $arg in
	nvq_bench.*) bench_args="$bench_args ${arg#nvq_bench.}" ;;
	esac
done

waited=0
while [ "$(current_clocksource)" != tsc ] && [ "$waited" -lt "$CLOCKSOURCE_WAIT_S" ]; do
	sleep 1
	waited=$((waited + 1))
done
mark "CLOCKSOURCE $(current_clocksource)"

mark "TAINT before=$(cat /proc/sys/kernel/tainted)"

rc=0
mark "STEP-BEGIN load_no_self_test"
insmod "$MODULE_FILE" run_self_test=0 || rc=$?
mark "STEP load_no_self_test rc=$rc loaded=$(module_state)"

if [ "$rc" -eq 0 ]; then
	rc=0
	mark "STEP-BEGIN bench"
	# Word splitting of bench_args is intended: one word per parameter.
	# shellcheck disable=SC2086
	insmod "$BENCH_FILE" $bench_args || rc=$?
	mark "STEP bench rc=$rc loaded=$(module_state)"
fi

mark "TAINT after=$(cat /proc/sys/kernel/tainted)"
mark STEPS-END

echo NVQ-DMESG-BEGIN
dmesg
echo NVQ-DMESG-END
# poweroff -f does not wait for the console to drain.
sleep 1
mark DONE

poweroff -f
