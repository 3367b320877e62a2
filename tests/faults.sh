# shellcheck shell=bash
#
# The faults boot of the debug kernel: tests/faults/nvq-faults.ko injects
# allocation failures into queue init (step faults_inject) and blocks a
# queue behind a stuck callback (step faults_stuck). Both steps make the
# kernel log what a clean boot must not have: two misuse warnings, and
# hung-task reports that name the flusher. The checks here expect exactly
# those and apply the usual splat patterns to everything else. Sourced by
# run-tests.sh after lib.sh.

# Guest steps of the faults boot, read by run-tests.sh. The kmemleak scan
# runs last, so memory that a failed init leaked shows up there (except a
# lockdep key, which nvq-faults.ko checks itself).
# shellcheck disable=SC2034
NVQ_FAULTS_STEPS=load_no_self_test,faults_inject,faults_stuck,kmemleak_scan

# Warnings that faults_inject provokes on purpose, by calling schedule and
# flush on a queue whose init failed. Each warns once per boot.
NVQ_FAULTS_EXPECTED_WARNINGS=(
	'schedule on a queue that is not running'
	'flush on a queue that is not running'
)

# TAINT_WARN (W, 512), which those warnings set.
NVQ_FAULTS_EXPECTED_TAINT_MASK=512

# Print the kernel log without the lines of steps faults_inject and
# faults_stuck.
nvq_faults_other_lines() {
	local kernel_log=$1

	awk '
		/NVQ-STEP-BEGIN faults_(inject|stuck)$/ { inside = 1 }
		!inside { print }
		/NVQ-STEP faults_(inject|stuck) rc=/ { inside = 0 }
	' <<<"$kernel_log"
}

# Print the lines of TEXT that match a splat pattern other than those
# listed after TEXT.
nvq_faults_unexpected_splats() {
	local text=$1
	local pattern allowed keep
	local -a grep_args=()
	shift

	for pattern in "${NVQ_SPLAT_PATTERNS[@]}"; do
		keep=1
		for allowed in "$@"; do
			if [[ $pattern == "$allowed" ]]; then
				keep=0
			fi
		done
		if ((keep)); then
			grep_args+=(-e "$pattern")
		fi
	done
	grep -E "${grep_args[@]}" <<<"$text" || true
}

# Count the lines of TEXT that match the extended regular expression RE.
nvq_faults_count() {
	local text=$1 re=$2

	grep -cE "$re" <<<"$text" || true
}

# Check step faults_inject: the module passed, faults were injected, and
# the only warnings are the expected ones, each with its stack trace.
nvq_check_faults_inject() {
	local kernel_log=$1
	local lines message warnings traces unexpected
	local -a problems=()

	nvq_check_step_values "$kernel_log" faults_inject "rc=0" || return 1
	lines=$(nvq_step_lines "$kernel_log" faults_inject)

	if ! grep -qE 'nvq_faults: inject: passed: ' <<<"$lines"; then
		problems+=("no 'nvq_faults: inject: passed' line")
	fi
	if ! grep -q 'FAULT_INJECTION: forcing a failure' <<<"$lines"; then
		problems+=("failslab logged no injected fault")
	fi
	for message in "${NVQ_FAULTS_EXPECTED_WARNINGS[@]}"; do
		if ! grep -qF "$message" <<<"$lines"; then
			problems+=("no warning '$message'")
		fi
	done
	warnings=$(nvq_faults_count "$lines" 'WARNING:')
	traces=$(nvq_faults_count "$lines" 'Call Trace')
	if ((warnings != ${#NVQ_FAULTS_EXPECTED_WARNINGS[@]} || traces != warnings)); then
		problems+=("$warnings warnings and $traces stack traces, expected ${#NVQ_FAULTS_EXPECTED_WARNINGS[@]} of each")
	fi
	unexpected=$(nvq_faults_unexpected_splats "$lines" 'WARNING:' 'Call Trace')
	if [[ -n $unexpected ]]; then
		problems+=("unexpected kernel reports:" "$unexpected")
	fi

	if ((${#problems[@]} == 0)); then
		grep -E 'nvq_faults: inject: passed: ' <<<"$lines" | sed 's/^\[[^]]*\] //'
		return 0
	fi
	nvq_print_step_problems faults_inject "$lines" 80 "${problems[@]}"
	return 1
}

# Check step faults_stuck: the module passed, the hung-task detector
# reported the flusher blocked in nv_kthread_q_flush() and no other task.
nvq_check_faults_stuck() {
	local kernel_log=$1
	local lines reports flusher_reports traces unexpected
	local -a problems=()

	nvq_check_step_values "$kernel_log" faults_stuck "rc=0" || return 1
	lines=$(nvq_step_lines "$kernel_log" faults_stuck)

	if ! grep -qE 'nvq_faults: stuck: passed: ' <<<"$lines"; then
		problems+=("no 'nvq_faults: stuck: passed' line")
	fi
	reports=$(nvq_faults_count "$lines" 'INFO: task .* blocked for more than')
	flusher_reports=$(nvq_faults_count "$lines" 'INFO: task nvq-flusher:[0-9]+ blocked for more than')
	if ((flusher_reports == 0)); then
		problems+=("the hung-task detector did not report nvq-flusher")
	fi
	if ((reports != flusher_reports)); then
		problems+=("the hung-task detector reported other tasks:" "$(grep 'INFO: task' <<<"$lines" | grep -v 'nvq-flusher')")
	fi
	if ! grep -q 'nv_kthread_q_flush' <<<"$lines"; then
		problems+=("no stack trace through nv_kthread_q_flush")
	fi
	traces=$(nvq_faults_count "$lines" 'Call Trace')
	if ((traces != reports)); then
		problems+=("$traces stack traces for $reports hung-task reports")
	fi
	unexpected=$(nvq_faults_unexpected_splats "$lines" 'INFO: task .* blocked' 'Call Trace')
	if [[ -n $unexpected ]]; then
		problems+=("unexpected kernel reports:" "$unexpected")
	fi

	if ((${#problems[@]} == 0)); then
		echo "$flusher_reports hung-task reports, all of nvq-flusher in nv_kthread_q_flush"
		grep -E 'nvq_faults: stuck: passed: ' <<<"$lines" | sed 's/^\[[^]]*\] //'
		return 0
	fi
	nvq_print_step_problems faults_stuck "$lines" 80 "${problems[@]}"
	return 1
}

# Check the faults boot's console log outside the two fault steps with the
# usual splat patterns, and its taint, which may include the warning.
nvq_check_faults_console() {
	local log_file=$1
	local unexpected

	unexpected=$(nvq_faults_unexpected_splats "$(nvq_faults_other_lines "$(nvq_kernel_log "$log_file")")")
	if [[ -n $unexpected ]]; then
		echo "kernel warning or error lines outside the fault steps:"
		nvq_print_head "$unexpected" 60
		return 1
	fi
	nvq_check_taint "$log_file" "$NVQ_FAULTS_EXPECTED_TAINT_MASK"
}
