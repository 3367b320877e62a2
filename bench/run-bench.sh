#!/bin/bash
#
# Benchmark nv_kthread_q against kthread_worker, an ordered and an unbound
# workqueue, and a bare wake_up_process() floor, inside QEMU guests booted
# with Debian's 6.12 generic kernel (metapackage linux-image-6.12-amd64).
#
#   bench/run-bench.sh            full run at -smp 2 and -smp 4; writes the
#                                 results section of bench/README.md
#   bench/run-bench.sh --smoke    few samples at -smp 2 only; proves that the
#                                 module builds and the tables come out, and
#                                 writes them to bench/logs/smoke-results.md
#   --output FILE                 write the results section to FILE instead
#   --smp N                       boot with N vCPUs only (repeat for more)
#
# Each -smp setting boots twice: once for the latency workload, with
# idle=poll while the host has a CPU for each vCPU, and once without
# idle=poll for the other workloads (a polling vCPU takes host CPU time
# from the busy ones). Every implementation runs in the same boot, so
# ratios to nv_kthread_q compare like with like. BENCH_BOOT_TIMEOUT sets
# the seconds one boot may take (1800).
#
# Run as root on Debian 12. It installs QEMU, busybox and the kernel with
# apt-get through tests/lib.sh, and never loads a module into the kernel
# of the machine it runs on. It fails when a build or a boot fails, never
# because of a measured number. Builds go to $NVQ_CACHE/bench (by default
# /var/cache/nv-kthread-q/bench), console logs to bench/logs/.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# A cache of its own, because nvq_build_module empties the build directory
# of the release, which the test suite may be using at the same time.
NVQ_CACHE=${NVQ_CACHE:-/var/cache/nv-kthread-q}/bench

# shellcheck source-path=SCRIPTDIR source=../tests/lib.sh
source "$BENCH_DIR/../tests/lib.sh"

BENCH_KERNEL_METAPACKAGE=linux-image-6.12-amd64
BENCH_LOG_DIR=$BENCH_DIR/logs
BENCH_README=$BENCH_DIR/README.md
BENCH_BEGIN_MARKER='<!-- run-bench.sh results: begin -->'
BENCH_END_MARKER='<!-- run-bench.sh results: end -->'
BENCH_BASE_KERNEL_ARGS=$NVQ_KERNEL_ARGS

# Implementations in table order, with their column titles.
BENCH_IMPLS=(nvq kthread_worker ordered_wq unbound_wq floor)
declare -A BENCH_IMPL_TITLES=(
	[nvq]=nv_kthread_q
	[kthread_worker]=kthread_worker
	[ordered_wq]="ordered wq"
	[unbound_wq]="unbound wq"
	[floor]="floor (wake_up_process)"
)

# Figures in table order: metric name as nvq-bench prints it, row title,
# unit shown, divisor from the printed unit, decimals.
BENCH_FIGURES=(
	"latency_p50_ns|schedule->run latency p50|us|1000|1"
	"latency_p90_ns|schedule->run latency p90|us|1000|1"
	"latency_p99_ns|schedule->run latency p99|us|1000|1"
	"latency_max_ns|schedule->run latency max|us|1000|1"
	"throughput_1_items_per_s|throughput, 1 producer|k items/s|1000|1"
	"throughput_4_items_per_s|throughput, 4 producers|k items/s|1000|1"
	"throughput_8_items_per_s|throughput, 8 producers|k items/s|1000|1"
	"schedule_1_ns|schedule call on a busy queue, 1 producer|ns|1|0"
	"schedule_4_ns|schedule call on a busy queue, 4 producers|ns|1|0"
	"schedule_8_ns|schedule call on a busy queue, 8 producers|ns|1|0"
	"flush_empty_ns|flush of an empty queue|us|1000|1"
	"flush_1000_ns|flush with 1,000 items pending|us|1000|0"
	"flush_1000_prerun_items|of those 1,000, items run before the flush|items|1|0"
	"init_stop_ns|init + stop of one queue|us|1000|0"
	"idle_context_switches|context switches of the idle queue thread|count|1|0"
)

usage() {
	cat <<EOF
Usage: bench/run-bench.sh [--smoke] [--output FILE]

  --smoke        few samples, -smp 2 only, results to bench/logs/smoke-results.md
  --smp N        boot with N vCPUs only; repeat for several (default: 2 and 4)
  --output FILE  write the results section to FILE (default: bench/README.md,
                 between its result markers, or the smoke file with --smoke)
EOF
}

# Print the module parameters of one run size: "full" or "smoke".
bench_module_params() {
	case $1 in
	full) echo "reps=5 samples=10000 gap_us=100 items=100000 flush_runs=1000 pending_flush_runs=20 init_stop_runs=100 idle_ms=3000" ;;
	smoke) echo "reps=2 samples=300 gap_us=100 items=4000 flush_runs=50 pending_flush_runs=3 init_stop_runs=10 idle_ms=500" ;;
	esac
}

# Build nv-kthread-q with nvq_build_module, then the benchmark module in a
# copy under the same build directory, against its Module.symvers.
bench_build() {
	local release=$1 log_file=$2
	local build_dir output

	if ! output=$(nvq_build_module "$release" "$log_file" 2>&1); then
		echo "$output"
		nvq_die "build of nv-kthread-q failed for $release"
	fi

	build_dir=$(nvq_build_dir "$release")
	mkdir -p "$build_dir/bench"
	# The bench Makefile includes the example consumer's by a relative
	# path, so the copy gets the consumer's Makefile itself.
	cp "$BENCH_DIR"/{Kbuild,nvq-bench.c} "$build_dir/bench/"
	cp "$NVQ_REPO_DIR/examples/consumer/Makefile" "$build_dir/bench/Makefile"
	if ! make -C "$build_dir/bench" KERNELRELEASE="$release" NVQ_DIR="$build_dir" \
		>>"$log_file" 2>&1; then
		tail -n 20 "$log_file"
		nvq_die "build of the benchmark module failed for $release (log: $log_file)"
	fi
}

# Pack the initramfs: static busybox, bench/guest-init.sh as /init, and the
# two modules.
bench_build_initramfs() {
	local release=$1 output=$2
	local build_dir busybox staging

	build_dir=$(nvq_build_dir "$release")
	busybox=$(command -v busybox) || nvq_die "busybox not found (package busybox-static)"
	staging=$(mktemp -d)
	mkdir -p "$staging/bin"
	cp "$busybox" "$staging/bin/busybox"
	ln -s busybox "$staging/bin/sh"
	install -m 0755 "$BENCH_DIR/guest-init.sh" "$staging/init"
	cp "$build_dir/$NVQ_MODULE_FILE" "$staging/$NVQ_MODULE_FILE"
	cp "$build_dir/bench/nvq-bench.ko" "$staging/nvq-bench.ko"

	mkdir -p "$(dirname "$output")"
	(cd "$staging" && find . -print0 | cpio --null --create --format=newc --owner=0:0 --quiet) |
		gzip -1 >"$output"
	rm -rf "$staging"
}

# Print the QEMU command line that nvq_boot runs, for the record.
bench_qemu_command() {
	local release=$1 topology=$2

	echo "qemu-system-x86_64 -accel tcg -cpu max -nographic -no-reboot -nic none" \
		"-kernel /boot/vmlinuz-$release -initrd <initramfs>" \
		"-append '$NVQ_KERNEL_ARGS nvq.steps=bench' $(nvq_topology_args "$topology")"
}

# Print the host's 1, 5 and 15 minute load averages and its number of
# running C compilers (cc1), which distort the timings.
bench_host_load() {
	local load compilers

	load=$(cut -d ' ' -f 1-3 /proc/loadavg)
	compilers=$(pgrep -c -x 'cc1|cc1plus' || true)
	echo "load average $load, $compilers compiler processes"
}

# Boot once and append the result lines to RESULTS as tab-separated
# "smp impl metric rep value". Writes the QEMU command to COMMAND_FILE.
bench_boot() {
	local release=$1 initrd=$2 smp=$3 kind=$4 params=$5 results=$6 command_file=$7
	local topology=smp$smp log_file kernel_log output param
	local qemu_status=0
	local -a problems=()

	NVQ_KERNEL_ARGS=$BENCH_BASE_KERNEL_ARGS
	if [[ $kind == latency ]]; then
		# A polling vCPU keeps a host CPU busy. With more vCPUs than
		# host CPUs, the polling vCPUs take turns on the host CPUs, and
		# each wake-up waits for the host to run the target vCPU, which
		# takes milliseconds.
		if ((smp <= $(nproc))); then
			NVQ_KERNEL_ARGS+=" idle=poll"
		fi
		NVQ_KERNEL_ARGS+=" nvq_bench.workloads=latency"
	else
		NVQ_KERNEL_ARGS+=" nvq_bench.workloads=throughput,flush,init_stop,idle"
	fi
	for param in $params; do
		NVQ_KERNEL_ARGS+=" nvq_bench.$param"
	done
	bench_qemu_command "$release" "$topology" >"$command_file"

	log_file=$BENCH_LOG_DIR/$release-smp$smp-$kind.log
	nvq_log "booting $release with -smp $smp ($kind workloads), console log: $log_file"
	nvq_boot "$release" "$initrd" "$topology" bench "$log_file" || qemu_status=$?
	kernel_log=$(nvq_kernel_log "$log_file")

	if ! output=$(nvq_check_boot_finished "$log_file" "$qemu_status"); then
		problems+=("$output")
	fi
	if ! output=$(nvq_check_console_clean "$log_file"); then
		problems+=("$output")
	fi
	if [[ $(nvq_step_result "$kernel_log" load_no_self_test) != "rc=0 loaded=yes" ]]; then
		problems+=("insmod nv-kthread-q.ko run_self_test=0 failed")
	fi
	if [[ $(nvq_step_result "$kernel_log" bench) != rc=0* ]]; then
		problems+=("insmod nvq-bench.ko failed:
$(grep 'nvq_bench:' <<<"$kernel_log" | grep -v ' result ' || true)")
	fi
	if ((${#problems[@]} > 0)); then
		printf '%s\n' "${problems[@]}"
		nvq_die "the -smp $smp $kind boot failed; console log: $log_file"
	fi

	grep 'nvq_bench: config ' <<<"$kernel_log" | sed 's/.*nvq_bench: //' | head -n 1 >>"$command_file"
	sed -n 's/.*NVQ-\(CLOCKSOURCE .*\)/\1/p' <<<"$kernel_log" | head -n 1 >>"$command_file"
	sed -n 's/.*nvq_bench: result impl=\([^ ]*\) metric=\([^ ]*\) rep=\([0-9]*\) value=\([0-9]*\).*/\1\t\2\t\3\t\4/p' \
		<<<"$kernel_log" | sed "s/^/$smp\t/" >>"$results"
}

# Print the markdown tables of one -smp setting from RESULTS: ratios to
# nv_kthread_q, then absolute values as median (min-max) over repetitions.
bench_tables() {
	local results=$1 smp=$2
	local impls titles

	impls=$(printf '%s ' "${BENCH_IMPLS[@]}")
	titles=$(for impl in "${BENCH_IMPLS[@]}"; do printf '%s|' "${BENCH_IMPL_TITLES[$impl]}"; done)

	printf '%s\n' "${BENCH_FIGURES[@]}" | awk -F '\t' -v smp="$smp" -v impls="$impls" \
		-v titles="$titles" -v results="$results" '
	function sort_values(a, n,    i, j, v) {
		for (i = 2; i <= n; i++) {
			v = a[i]
			for (j = i - 1; j >= 1 && a[j] > v; j--)
				a[j + 1] = a[j]
			a[j + 1] = v
		}
	}
	function median(a, n) {
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	# Two decimals, or two significant digits below 0.1, so that a
	# small ratio does not print as 0.00.
	function ratio(v) {
		return v >= 0.1 || v == 0 ? sprintf("%.2f", v) : sprintf("%.2g", v)
	}
	function number(v, scale, decimals) {
		return sprintf("%." decimals "f", v / scale)
	}
	BEGIN {
		impl_count = split(impls, impl, " ")
		split(titles, title, "|")
		while ((getline line < results) > 0) {
			split(line, f, "\t")
			if (f[1] != smp)
				continue
			key = f[2] SUBSEP f[3]
			count[key]++
			values[key, count[key]] = f[5] + 0
		}
		header = "| figure |"
		rule = "|---|"
		for (i = 1; i <= impl_count; i++) {
			header = header " " title[i] " |"
			rule = rule "---|"
		}
	}
	{
		split($0, spec, "|")
		figure_count++
		metric[figure_count] = spec[1]
		label[figure_count] = spec[2]
		unit[figure_count] = spec[3]
		scale[figure_count] = spec[4]
		decimals[figure_count] = spec[5]
	}
	END {
		for (r = 1; r <= figure_count; r++) {
			for (i = 1; i <= impl_count; i++) {
				key = impl[i] SUBSEP metric[r]
				n = count[key] + 0
				delete a
				for (k = 1; k <= n; k++)
					a[k] = values[key, k]
				sort_values(a, n)
				have[r, i] = n
				if (n) {
					med[r, i] = median(a, n)
					low[r, i] = a[1]
					high[r, i] = a[n]
					reps = n
				}
			}
		}

		print "Ratio to nv_kthread_q of the median over " reps " repetitions."
		print "For times, below 1 is faster than nv_kthread_q. For throughput, above"
		print "1 is more items per second. n/a: the figure does not apply. Figures"
		print "where nv_kthread_q measured 0 are only in the second table."
		print ""
		print header
		print rule
		for (r = 1; r <= figure_count; r++) {
			if (!have[r, 1] || med[r, 1] == 0)
				continue
			row = "| " label[r] " |"
			for (i = 1; i <= impl_count; i++) {
				if (have[r, i] && have[r, 1] && med[r, 1] > 0)
					row = row " " ratio(med[r, i] / med[r, 1]) " |"
				else
					row = row " n/a |"
			}
			print row
		}

		print ""
		print "Absolute values: median (min-max) over the repetitions."
		print ""
		print "| figure | unit |" substr(header, length("| figure |") + 1)
		print rule "---|"
		for (r = 1; r <= figure_count; r++) {
			row = "| " label[r] " | " unit[r] " |"
			for (i = 1; i <= impl_count; i++) {
				if (!have[r, i]) {
					row = row " n/a |"
					continue
				}
				row = row " " number(med[r, i], scale[r], decimals[r]) " (" \
					number(low[r, i], scale[r], decimals[r]) "-" \
					number(high[r, i], scale[r], decimals[r]) ") |"
			}
			print row
		}
	}'
}

# Print the results section: how the run was made, then the tables.
bench_results_section() {
	local release=$1 size=$2 results=$3 command_line=$4 wall_s=$5 load_before=$6 load_after=$7
	shift 7
	local -a smps=("$@")
	local smp kind

	echo "$BENCH_BEGIN_MARKER"
	echo
	echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), $size size, written by \`$command_line\`"
	echo "in $wall_s s of wall time (builds and boots included)."
	echo
	echo "- Kernel: $release (Debian, from \`$BENCH_KERNEL_METAPACKAGE\`)"
	echo "- nv-kthread-q: $(git -C "$BENCH_DIR" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "- Module parameters: \`$(bench_module_params "$size")\`"
	echo "- Host: $(nproc) CPUs, $(uname -m), QEMU $(qemu-system-x86_64 --version | head -n 1 | awk '{ print $4 }')"
	echo "- Host load before: $load_before; after: $load_after"
	for smp in "${smps[@]}"; do
		for kind in latency other; do
			echo "- -smp $smp, $kind boot:"
			echo "  \`$(head -n 1 "$BENCH_LOG_DIR/command-smp$smp-$kind.txt")\`"
			echo "  guest: $(tail -n +2 "$BENCH_LOG_DIR/command-smp$smp-$kind.txt" | paste -sd ';' | sed 's/;/; /g')"
		done
	done
	for smp in "${smps[@]}"; do
		echo
		echo "### $smp vCPUs (-smp $smp)"
		echo
		bench_tables "$results" "$smp"
	done
	echo
	echo "$BENCH_END_MARKER"
}

# Replace the text between the result markers of FILE with SECTION_FILE.
bench_write_readme() {
	local file=$1 section_file=$2

	if ! grep -qF "$BENCH_BEGIN_MARKER" "$file" || ! grep -qF "$BENCH_END_MARKER" "$file"; then
		nvq_die "$file lacks the lines '$BENCH_BEGIN_MARKER' and '$BENCH_END_MARKER'; add them where the results go"
	fi
	awk -v begin="$BENCH_BEGIN_MARKER" -v end="$BENCH_END_MARKER" -v section="$section_file" '
		$0 == begin {
			while ((getline line < section) > 0)
				print line
			skipping = 1
			next
		}
		$0 == end { skipping = 0; next }
		!skipping { print }
	' "$file" >"$file.new"
	mv "$file.new" "$file"
}

main() {
	local size=full output="" release initrd results section_file smp kind
	local load_before load_after command_line
	local -a smps=(2 4) requested_smps=()
	local start_s=$SECONDS

	command_line="bench/run-bench.sh${*:+ $*}"
	while (($# > 0)); do
		case $1 in
		--smoke) size=smoke ;;
		--smp)
			if (($# < 2)) || [[ ! $2 =~ ^[1-9][0-9]*$ ]]; then
				nvq_die "--smp needs a vCPU count, e.g. --smp 2"
			fi
			requested_smps+=("$2")
			shift
			;;
		--output)
			(($# >= 2)) || nvq_die "--output needs a file name"
			output=$2
			shift
			;;
		-h | --help)
			usage
			return 0
			;;
		*)
			usage >&2
			nvq_die "unknown argument '$1'"
			;;
		esac
		shift
	done
	if [[ $size == smoke ]]; then
		smps=(2)
		output=${output:-$BENCH_LOG_DIR/smoke-results.md}
	fi
	if ((${#requested_smps[@]} > 0)); then
		smps=("${requested_smps[@]}")
	fi
	output=${output:-$BENCH_README}

	if ((EUID != 0)); then
		nvq_die "run as root: the benchmark installs packages with apt-get"
	fi

	load_before=$(bench_host_load)
	nvq_log "host: $load_before"

	nvq_install_host_tools_and_kernels "$BENCH_KERNEL_METAPACKAGE"
	release=$(nvq_kernel_release "$BENCH_KERNEL_METAPACKAGE")
	mkdir -p "$BENCH_LOG_DIR"

	nvq_log "building nv-kthread-q and the benchmark module for $release"
	bench_build "$release" "$BENCH_LOG_DIR/build-$release.log"
	initrd=$NVQ_CACHE/initramfs/bench-$release.cpio.gz
	bench_build_initramfs "$release" "$initrd"

	# One full latency boot took 1.5 to 7.5 minutes on a 2-core host.
	NVQ_BOOT_TIMEOUT=${BENCH_BOOT_TIMEOUT:-1800}
	results=$BENCH_LOG_DIR/results.tsv
	: >"$results"
	for smp in "${smps[@]}"; do
		NVQ_TOPOLOGIES[smp$smp]="-smp $smp,sockets=1,cores=$smp,threads=1 -m 1G"
		for kind in latency other; do
			bench_boot "$release" "$initrd" "$smp" "$kind" "$(bench_module_params "$size")" \
				"$results" "$BENCH_LOG_DIR/command-smp$smp-$kind.txt"
		done
	done
	load_after=$(bench_host_load)

	section_file=$BENCH_LOG_DIR/results-section.md
	bench_results_section "$release" "$size" "$results" "$command_line" \
		$((SECONDS - start_s)) "$load_before" "$load_after" "${smps[@]}" >"$section_file"
	if [[ $output == "$BENCH_README" ]]; then
		bench_write_readme "$output" "$section_file"
	else
		cp "$section_file" "$output"
	fi

	cat "$section_file"
	nvq_log "results written to $output"
}

main "$@"
