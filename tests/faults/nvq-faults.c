// SPDX-License-Identifier: MIT
/*
 * Fault tests of nv-kthread-q, for the debug kernel of the test suite.
 *
 * test=inject makes the allocations behind nv_kthread_q_init_on_node() fail
 * with the kernel's fault injection, one allocation per init: first those
 * of the calling task, then those that kthreadd makes while it creates the
 * queue's thread. It sets fail_nth of the task, which is what writing to
 * /proc/<pid>/fail-nth does, but kthreadd cannot write its own. An init
 * that fails must return a negative errno and leave no thread, and stop
 * must then do nothing. An init that survives a fault must give a working
 * queue. The first failed queue also gets a schedule and a flush, which
 * must warn and return. Needs CONFIG_FAULT_INJECTION and CONFIG_FAILSLAB,
 * with /sys/kernel/debug/failslab/ignore-gfp-wait set to N, and
 * panic_on_warn off for those two warnings.
 *
 * test=stuck gives one queue a callback that does not return for hold_ms,
 * and flushes that queue from a thread of its own, named nvq-flusher.
 * Another queue must keep running items meanwhile, and a queue must still
 * init and stop. The callback sleeps interruptibly and this module's waits
 * are interruptible too, so with a hung-task timeout below hold_ms the
 * detector reports only the flusher, which waits uninterruptibly.
 *
 * Each test prints one "nvq_faults: <test>: passed: ..." line, or FAIL
 * lines and "nvq_faults: <test>: FAILED", and the load fails on failure.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/nodemask.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/string.h>
#include <linux/wait.h>

#include "nv-kthread-q.h"

static char *test = "inject";
module_param(test, charp, 0444);
MODULE_PARM_DESC(test, "Test to run at load: inject or stuck (default: inject)");

static unsigned int hold_ms = 8000;
module_param(hold_ms, uint, 0444);
MODULE_PARM_DESC(hold_ms,
		 "test=stuck: milliseconds the stuck callback blocks its queue (default: 8000)");

/*
 * fail_nth values tried per kind of init, at most. In the suite's runs an
 * init reached at most 20 allocations that can fail in either task, so
 * the search ends well before this.
 */
#define FAULTS_MAX_NTH 200

/* Prefix of the name of every queue this module creates. */
#define FAULTS_QUEUE_PREFIX "nvq-fault"

static unsigned int faults_failures;

#define faults_fail(fmt, ...)						\
	do {								\
		faults_failures++;					\
		pr_err("FAIL: " fmt "\n", ##__VA_ARGS__);		\
	} while (0)

static void faults_count_run(void *args)
{
	atomic_inc(args);
}

#ifdef CONFIG_FAULT_INJECTION
/* Checks that @q runs one item and stops. */
static void faults_check_working_queue(nv_kthread_q_t *q, const char *label)
{
	nv_kthread_q_item_t item;
	atomic_t runs = ATOMIC_INIT(0);

	nv_kthread_q_item_init(&item, faults_count_run, &runs);
	if (nv_kthread_q_schedule_q_item(q, &item) != 1)
		faults_fail("%s: schedule on the new queue returned 0", label);
	nv_kthread_q_flush(q);
	if (atomic_read(&runs) != 1)
		faults_fail("%s: item ran %d times, expected 1", label,
			    atomic_read(&runs));

	nv_kthread_q_stop(q);
	if (READ_ONCE(q->q_kthread))
		faults_fail("%s: queue still has a thread after stop", label);
}

/*
 * Checks the queue that a failed init left: no thread, stop does nothing,
 * and, when @misuse, schedule returns 0 without linking the item and flush
 * returns. Both of those warn.
 */
static void faults_check_failed_queue(nv_kthread_q_t *q, int ret,
				      bool misuse, const char *label)
{
	nv_kthread_q_item_t item;
	atomic_t runs = ATOMIC_INIT(0);

	if (ret >= 0 || ret < -MAX_ERRNO)
		faults_fail("%s: init returned %d, expected a negative errno",
			    label, ret);
	if (READ_ONCE(q->q_kthread))
		faults_fail("%s: failed init left a thread", label);
#ifdef CONFIG_LOCKDEP
	/*
	 * kmemleak cannot report a leaked key: lockdep's hash of registered
	 * keys still points to it. So check that init freed it.
	 */
	if (q->q_lockdep_key)
		faults_fail("%s: failed init left its lockdep key allocated",
			    label);
#endif

	nv_kthread_q_stop(q);

	if (!misuse)
		return;

	pr_info("%s: schedule and flush on the failed queue, each must warn once\n",
		label);
	nv_kthread_q_item_init(&item, faults_count_run, &runs);
	if (nv_kthread_q_schedule_q_item(q, &item) != 0)
		faults_fail("%s: schedule on the failed queue returned 1", label);
	nv_kthread_q_flush(q);
	if (!list_empty(&item.q_list_node))
		faults_fail("%s: item left linked on the failed queue", label);
	if (atomic_read(&runs) != 0)
		faults_fail("%s: item ran on the failed queue", label);
	nv_kthread_q_stop(q);
}

struct faults_figures {
	unsigned int injected;
	unsigned int failed_inits;
	unsigned int survived;
	unsigned int inits;
};

/*
 * Inits a queue on @node with fail_nth of @target set to 1, 2, 3, ... until
 * an init no longer reaches the nth allocation. Checks every resulting
 * queue as described at the top of this file.
 */
static void faults_inject_loop(struct task_struct *target, int node,
			       bool *misuse, struct faults_figures *figures)
{
	char label[64];
	unsigned int nth;

	for (nth = 1; nth <= FAULTS_MAX_NTH; nth++) {
		nv_kthread_q_t q;
		bool injected;
		int ret;

		snprintf(label, sizeof(label), "%s node %d fail_nth %u",
			 target == current ? "caller" : target->comm, node, nth);

		WRITE_ONCE(target->fail_nth, nth);
		ret = nv_kthread_q_init_on_node(&q, FAULTS_QUEUE_PREFIX "-inj",
						node);
		/* fail_nth drops to 0 when the nth allocation fails. */
		injected = READ_ONCE(target->fail_nth) == 0;
		WRITE_ONCE(target->fail_nth, 0);
		figures->inits++;

		if (ret) {
			if (!injected)
				faults_fail("%s: init returned %d without an injected fault",
					    label, ret);
			figures->injected++;
			figures->failed_inits++;
			faults_check_failed_queue(&q, ret, *misuse, label);
			*misuse = false;
			continue;
		}

		faults_check_working_queue(&q, label);
		if (!injected)
			return;
		/* The failed allocation had a fallback, e.g. a later try. */
		figures->injected++;
		figures->survived++;
	}

	faults_fail("caller or %s node %d: init still reached a fault at fail_nth %u",
		    target->comm, node, FAULTS_MAX_NTH);
}

static struct task_struct *faults_get_kthreadd(void)
{
	struct task_struct *task;
	struct pid *pid;

	/* kthreadd is always PID 2. */
	pid = find_get_pid(2);
	task = get_pid_task(pid, PIDTYPE_PID);
	put_pid(pid);
	if (task && (!(task->flags & PF_KTHREAD) ||
		     strcmp(task->comm, "kthreadd") != 0)) {
		put_task_struct(task);
		task = NULL;
	}
	return task;
}

/* Returns how many tasks have a name that starts with FAULTS_QUEUE_PREFIX. */
static unsigned int faults_count_queue_threads(void)
{
	struct task_struct *task;
	unsigned int count = 0;

	rcu_read_lock();
	for_each_process(task) {
		if (strncmp(task->comm, FAULTS_QUEUE_PREFIX,
			    strlen(FAULTS_QUEUE_PREFIX)) == 0)
			count++;
	}
	rcu_read_unlock();
	return count;
}

static int faults_test_inject(void)
{
	struct faults_figures caller = { 0 }, kthreadd_figures = { 0 };
	struct task_struct *kthreadd;
	unsigned long start = jiffies;
	unsigned int threads_left;
	bool misuse = true;
	int node, i;

	kthreadd = faults_get_kthreadd();
	if (!kthreadd) {
		faults_fail("kthreadd not found as PID 2");
		return -ENOENT;
	}

	/* No node preference, then each online node. */
	faults_inject_loop(current, NV_KTHREAD_NO_NODE, &misuse, &caller);
	faults_inject_loop(kthreadd, NV_KTHREAD_NO_NODE, &misuse,
			   &kthreadd_figures);
	for_each_online_node(node) {
		faults_inject_loop(current, node, &misuse, &caller);
		faults_inject_loop(kthreadd, node, &misuse, &kthreadd_figures);
	}
	put_task_struct(kthreadd);

	/* kthread_stop() returns before the stopped thread leaves the list. */
	for (i = 0; i < 100; i++) {
		threads_left = faults_count_queue_threads();
		if (!threads_left)
			break;
		msleep_interruptible(10);
	}
	if (threads_left)
		faults_fail("%u threads named %s* are left", threads_left,
			    FAULTS_QUEUE_PREFIX);

	if (caller.failed_inits == 0 || kthreadd_figures.failed_inits == 0)
		faults_fail("no init failed (caller %u, kthreadd %u): is failslab ignore-gfp-wait N?",
			    caller.failed_inits, kthreadd_figures.failed_inits);
	if (faults_failures)
		return -EINVAL;

	pr_info("inject: passed: %u faults injected in %u inits (in the caller: %u failed inits, %u survived; in kthreadd: %u failed inits, %u survived) in %u ms\n",
		caller.injected + kthreadd_figures.injected,
		caller.inits + kthreadd_figures.inits,
		caller.failed_inits, caller.survived,
		kthreadd_figures.failed_inits, kthreadd_figures.survived,
		jiffies_to_msecs(jiffies - start));
	return 0;
}
#else
static int faults_test_inject(void)
{
	pr_err("test=inject needs a kernel built with CONFIG_FAULT_INJECTION\n");
	return -EOPNOTSUPP;
}
#endif

static DECLARE_WAIT_QUEUE_HEAD(stuck_wait);
static bool stuck_released;
static atomic_t stuck_entered = ATOMIC_INIT(0);
static atomic_t stuck_flush_returned = ATOMIC_INIT(0);

static void stuck_callback(void *args)
{
	atomic_inc(&stuck_entered);
	/*
	 * Kernel threads take no signals, so this sleeps until the release.
	 * An interruptible sleep keeps the hung-task detector on the flusher.
	 */
	while (wait_event_interruptible(stuck_wait, READ_ONCE(stuck_released)))
		;
}

static int stuck_flusher(void *data)
{
	nv_kthread_q_t *q = data;

	nv_kthread_q_flush(q);
	atomic_set(&stuck_flush_returned, 1);

	while (!kthread_should_stop()) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (!kthread_should_stop())
			schedule();
		__set_current_state(TASK_RUNNING);
	}
	return 0;
}

/* Sleeps interruptibly until @done is non-zero or @timeout_ms passed. */
static bool stuck_wait_for(atomic_t *done, unsigned int timeout_ms)
{
	unsigned long end = jiffies + msecs_to_jiffies(timeout_ms);

	while (!atomic_read(done)) {
		if (time_after(jiffies, end))
			return false;
		msleep_interruptible(10);
	}
	return true;
}

static int faults_test_stuck(void)
{
	nv_kthread_q_item_t stuck_item, behind_item, alive_item;
	atomic_t behind_runs = ATOMIC_INIT(0), alive_runs = ATOMIC_INIT(0);
	nv_kthread_q_t stuck_q, alive_q, extra_q;
	unsigned int alive_scheduled = 0, extra_inits = 0;
	struct task_struct *flusher;
	unsigned long start, end;
	int ret;

	ret = nv_kthread_q_init(&stuck_q, FAULTS_QUEUE_PREFIX "-stuck");
	if (ret) {
		faults_fail("init of the stuck queue returned %d", ret);
		return ret;
	}
	ret = nv_kthread_q_init(&alive_q, FAULTS_QUEUE_PREFIX "-alive");
	if (ret) {
		faults_fail("init of the other queue returned %d", ret);
		nv_kthread_q_stop(&stuck_q);
		return ret;
	}

	nv_kthread_q_item_init(&stuck_item, stuck_callback, NULL);
	nv_kthread_q_item_init(&behind_item, faults_count_run, &behind_runs);
	nv_kthread_q_item_init(&alive_item, faults_count_run, &alive_runs);

	nv_kthread_q_schedule_q_item(&stuck_q, &stuck_item);
	if (!stuck_wait_for(&stuck_entered, 10000))
		faults_fail("the stuck callback did not start within 10 s");
	if (nv_kthread_q_schedule_q_item(&stuck_q, &behind_item) != 1)
		faults_fail("schedule behind the stuck callback returned 0");

	flusher = kthread_run(stuck_flusher, &stuck_q, "nvq-flusher");
	if (IS_ERR(flusher)) {
		faults_fail("creating the flusher thread returned %ld",
			    PTR_ERR(flusher));
		flusher = NULL;
	}

	pr_info("stuck: holding queue %s-stuck for %u ms while nvq-flusher flushes it\n",
		FAULTS_QUEUE_PREFIX, hold_ms);
	start = jiffies;
	end = start + msecs_to_jiffies(hold_ms);
	while (time_before(jiffies, end)) {
		nv_kthread_q_t *q = &extra_q;

		/* The other queue keeps running items, and flush works there. */
		if (nv_kthread_q_schedule_q_item(&alive_q, &alive_item) != 1)
			faults_fail("schedule on the other queue returned 0");
		alive_scheduled++;
		nv_kthread_q_flush(&alive_q);

		/* New queues still start and stop. */
		if (nv_kthread_q_init(q, FAULTS_QUEUE_PREFIX "-extra") == 0) {
			extra_inits++;
			nv_kthread_q_stop(q);
		} else {
			faults_fail("init of another queue failed while one is stuck");
		}

		msleep_interruptible(20);
	}

	if (atomic_read(&stuck_flush_returned))
		faults_fail("flush of the stuck queue returned before the callback did");
	if (atomic_read(&behind_runs) != 0)
		faults_fail("the item behind the stuck callback ran before it returned");

	WRITE_ONCE(stuck_released, true);
	wake_up_all(&stuck_wait);

	if (flusher && !stuck_wait_for(&stuck_flush_returned, 30000))
		faults_fail("flush of the stuck queue did not return within 30 s of the release");
	if (flusher)
		kthread_stop(flusher);

	if (atomic_read(&behind_runs) != 1)
		faults_fail("the item behind the stuck callback ran %d times, expected 1",
			    atomic_read(&behind_runs));
	if (atomic_read(&alive_runs) != alive_scheduled)
		faults_fail("the other queue ran %d of %u items",
			    atomic_read(&alive_runs), alive_scheduled);
	if (alive_scheduled == 0)
		faults_fail("the other queue got no items during the hold");

	nv_kthread_q_stop(&stuck_q);
	nv_kthread_q_stop(&alive_q);

	if (faults_failures)
		return -EINVAL;

	pr_info("stuck: passed: flush waited %u ms behind the stuck callback while another queue ran %u items and %u queues started and stopped\n",
		jiffies_to_msecs(jiffies - start), alive_scheduled,
		extra_inits);
	return 0;
}

static int __init faults_init(void)
{
	int ret;

	if (strcmp(test, "inject") == 0) {
		ret = faults_test_inject();
	} else if (strcmp(test, "stuck") == 0) {
		ret = faults_test_stuck();
	} else {
		pr_err("invalid test '%s': use inject or stuck\n", test);
		return -EINVAL;
	}

	if (ret)
		pr_err("%s: FAILED\n", test);
	return ret;
}
module_init(faults_init);

static void __exit faults_exit(void)
{
}
module_exit(faults_exit);

MODULE_DESCRIPTION("Fault injection and stuck-callback tests of nv_kthread_q");
MODULE_LICENSE("Dual MIT/GPL");
