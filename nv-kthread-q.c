// SPDX-License-Identifier: MIT
/*
 * nv-kthread-q: a deferred-work queue served by one kernel thread per queue.
 *
 * Each queue is a list of pending items guarded by a raw spinlock, and a
 * semaphore that the queue's thread sleeps on while the list is empty. The
 * thread unlinks the oldest item and calls its function, one item at a
 * time. Flush queues an on-stack sentinel item and waits for
 * it to run, twice in a row. The locking rules are in nv-kthread-q-os.h.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bug.h>
#include <linux/completion.h>
#include <linux/kthread.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/nodemask.h>
#include <linux/sched.h>
#include <linux/sched/task_stack.h>
#include <linux/slab.h>
#include <linux/topology.h>
#include <linux/vmalloc.h>

#include "nv-kthread-q.h"

#ifndef NV_KTHREAD_Q_VERSION
#define NV_KTHREAD_Q_VERSION "unknown"
#endif

/*
 * How many threads init_on_node creates at most while looking for one
 * whose stack is on the preferred node.
 */
#define NVQ_NODE_PLACEMENT_TRIES 3

/*
 * The self-test misuses the API on purpose. While it does, misuse reported
 * against the one queue it names is counted here instead of warned about.
 * Loading the module then leaves no WARNING splat and no warning taint,
 * and the test can check that each misuse was detected. Misuse of any other
 * queue always warns.
 */
static struct {
	bool armed;
	const nv_kthread_q_t *q;
	atomic_t count;
} nvq_expected_misuse;

/*
 * Returns true, after counting it, if the self-test expects misuse of @q
 * right now. Otherwise the caller must report the misuse.
 */
static bool nvq_absorb_expected_misuse(const nv_kthread_q_t *q)
{
	if (!READ_ONCE(nvq_expected_misuse.armed) ||
	    READ_ONCE(nvq_expected_misuse.q) != q)
		return false;

	atomic_inc(&nvq_expected_misuse.count);
	return true;
}

/*
 * Reports API misuse with a stack trace, so that a driver author can find
 * the caller. Each call site warns once per boot.
 */
#define nvq_warn_misuse(q, fmt, ...)					\
	do {								\
		if (!nvq_absorb_expected_misuse(q))			\
			WARN_ONCE(1, pr_fmt(fmt), ##__VA_ARGS__);	\
	} while (0)

/* Flush, stop and init sleep; from atomic context they would break. */
#define nvq_can_sleep() (in_task() && !irqs_disabled())

#ifdef CONFIG_LOCKDEP
static int nvq_lockdep_init(nv_kthread_q_t *q)
{
	q->q_lockdep_key = kzalloc(sizeof(*q->q_lockdep_key), GFP_KERNEL);
	if (!q->q_lockdep_key)
		return -ENOMEM;

	lockdep_register_key(q->q_lockdep_key);
	lockdep_init_map(&q->q_lockdep_map, "(nv_kthread_q)",
			 q->q_lockdep_key, 0);
	return 0;
}

static void nvq_lockdep_destroy(nv_kthread_q_t *q)
{
	lockdep_unregister_key(q->q_lockdep_key);
	kfree(q->q_lockdep_key);
	q->q_lockdep_key = NULL;
}

static void nvq_lockdep_acquire(nv_kthread_q_t *q)
{
	lock_map_acquire(&q->q_lockdep_map);
}

static void nvq_lockdep_release(nv_kthread_q_t *q)
{
	lock_map_release(&q->q_lockdep_map);
}
#else
static int nvq_lockdep_init(nv_kthread_q_t *q) { return 0; }
static void nvq_lockdep_destroy(nv_kthread_q_t *q) { }
static void nvq_lockdep_acquire(nv_kthread_q_t *q) { }
static void nvq_lockdep_release(nv_kthread_q_t *q) { }
#endif

/*
 * Wakes the queue's thread if it sleeps, or is about to sleep, on q_sem.
 * Called under q_lock, so that once stop has set the exit flag no caller
 * is still about to touch the semaphore of a queue that its owner may
 * free.
 */
static void nvq_wake_thread_locked(nv_kthread_q_t *q)
{
	if (q->q_thread_waiting) {
		q->q_thread_waiting = false;
		up(&q->q_sem);
	}
}

enum nvq_enqueue_result {
	NVQ_QUEUED,
	NVQ_ALREADY_PENDING,
	NVQ_STOPPING,
};

static enum nvq_enqueue_result nvq_enqueue(nv_kthread_q_t *q,
					   nv_kthread_q_item_t *q_item)
{
	enum nvq_enqueue_result result;
	unsigned long flags;

	raw_spin_lock_irqsave(&q->q_lock, flags);

	if (atomic_read(&q->main_loop_should_exit)) {
		result = NVQ_STOPPING;
	} else if (!list_empty(&q_item->q_list_node)) {
		result = NVQ_ALREADY_PENDING;
	} else {
		list_add_tail(&q_item->q_list_node, &q->q_list_head);
		nvq_wake_thread_locked(q);
		result = NVQ_QUEUED;
	}

	raw_spin_unlock_irqrestore(&q->q_lock, flags);
	return result;
}

int nv_kthread_q_schedule_q_item(nv_kthread_q_t *q,
				 nv_kthread_q_item_t *q_item)
{
	if (unlikely(!q || !READ_ONCE(q->q_kthread))) {
		nvq_warn_misuse(q, "schedule on a queue that is not running (q=%p)\n",
				q);
		return 0;
	}

	/*
	 * q_list_node.next is NULL only before nv_kthread_q_item_init(). The
	 * queue's thread may unlink the item meanwhile, so read it once and
	 * without q_lock: either value is non-NULL.
	 */
	if (unlikely(!q_item || !READ_ONCE(q_item->q_list_node.next) ||
		     !q_item->function_to_run)) {
		nvq_warn_misuse(q, "schedule of an item not set up by nv_kthread_q_item_init() (q_item=%p)\n",
				q_item);
		return 0;
	}

	return nvq_enqueue(q, q_item) == NVQ_QUEUED;
}
EXPORT_SYMBOL(nv_kthread_q_schedule_q_item);

void nv_kthread_q_item_init(nv_kthread_q_item_t *q_item,
			    nv_q_func_t function_to_run,
			    void *function_args)
{
	if (unlikely(!q_item)) {
		nvq_warn_misuse(NULL, "item init with a NULL item\n");
		return;
	}

	INIT_LIST_HEAD(&q_item->q_list_node);
	q_item->function_to_run = function_to_run;
	q_item->function_args = function_args;
}
EXPORT_SYMBOL(nv_kthread_q_item_init);

struct nvq_flush_sentinel {
	nv_kthread_q_item_t q_item;
	struct completion done;
};

static void nvq_flush_sentinel_run(void *args)
{
	struct nvq_flush_sentinel *sentinel = args;

	complete(&sentinel->done);
}

/*
 * Waits for every item queued before the call. Returns false if the queue
 * refused the sentinel because it is stopping.
 */
static bool nvq_flush_once(nv_kthread_q_t *q)
{
	struct nvq_flush_sentinel sentinel;

	nv_kthread_q_item_init(&sentinel.q_item, nvq_flush_sentinel_run,
			       &sentinel);
	init_completion(&sentinel.done);

	if (nvq_enqueue(q, &sentinel.q_item) != NVQ_QUEUED)
		return false;

	wait_for_completion(&sentinel.done);
	return true;
}

void nv_kthread_q_flush(nv_kthread_q_t *q)
{
	struct task_struct *thread = q ? READ_ONCE(q->q_kthread) : NULL;

	if (unlikely(!thread)) {
		nvq_warn_misuse(q, "flush on a queue that is not running (q=%p)\n",
				q);
		return;
	}

	if (unlikely(thread == current)) {
		nvq_warn_misuse(q, "flush from a callback of queue %s would deadlock; not flushing\n",
				thread->comm);
		return;
	}

	if (unlikely(!nvq_can_sleep())) {
		nvq_warn_misuse(q, "flush of queue %s from atomic context; not flushing\n",
				thread->comm);
		return;
	}

	/* Tell lockdep that this waits for everything the callbacks hold. */
	nvq_lockdep_acquire(q);
	nvq_lockdep_release(q);

	/*
	 * Flush twice. The first sentinel waits out any callback that was
	 * already running, and so may have missed its owner's "stop
	 * rescheduling" flag and queued its item once more. That item sits
	 * behind the first sentinel; the second sentinel, queued after the
	 * first one ran, waits for it.
	 */
	if (!nvq_flush_once(q) || !nvq_flush_once(q))
		nvq_warn_misuse(q, "flush of queue %s while it is being stopped\n",
				thread->comm);
}
EXPORT_SYMBOL(nv_kthread_q_flush);

/*
 * Unlinks the oldest pending item and copies out its function and
 * argument, so that the item is never read again once its function may
 * have rescheduled or freed it. Returns false when the list is empty, and
 * then marks the thread as waiting unless stop has begun. In both cases
 * *should_exit is set if stop has begun. Checking both under q_lock means
 * the thread never leaves while an accepted item is still linked.
 */
static bool nvq_dequeue(nv_kthread_q_t *q, nv_q_func_t *function,
			void **args, bool *should_exit)
{
	nv_kthread_q_item_t *q_item;

	raw_spin_lock_irq(&q->q_lock);

	q_item = list_first_entry_or_null(&q->q_list_head,
					  nv_kthread_q_item_t, q_list_node);
	if (q_item) {
		list_del_init(&q_item->q_list_node);
		*function = q_item->function_to_run;
		*args = q_item->function_args;
	}
	*should_exit = atomic_read(&q->main_loop_should_exit);
	q->q_thread_waiting = !q_item && !*should_exit;

	raw_spin_unlock_irq(&q->q_lock);
	return q_item;
}

static void nvq_wait_for_kthread_stop(void)
{
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
}

static int nvq_thread_main(void *data)
{
	nv_kthread_q_t *q = data;
	nv_q_func_t function;
	bool should_exit;
	void *args;

	for (;;) {
		if (!nvq_dequeue(q, &function, &args, &should_exit)) {
			if (should_exit)
				break;
			/*
			 * An interruptible sleep keeps an idle queue out of
			 * the load average and away from the hung-task
			 * detector. Kernel threads ignore signals, so only
			 * kthread_stop() interrupts the sleep. Stop calls it
			 * after setting the exit flag, and the list is
			 * drained either way.
			 */
			if (down_interruptible(&q->q_sem))
				WARN_ON_ONCE(!atomic_read(&q->main_loop_should_exit));
			continue;
		}

		nvq_lockdep_acquire(q);
		function(args);
		nvq_lockdep_release(q);

		/* A queue that never runs dry must not hog a CPU. */
		cond_resched();
	}

	/* Sleep, instead of returning, until stop reaps this thread. */
	nvq_wait_for_kthread_stop();
	return 0;
}

/*
 * Returns the node that contains every page of the stack of @task, or
 * NUMA_NO_NODE if the pages are spread over several nodes.
 */
static int nvq_task_stack_node(struct task_struct *task)
{
	void *stack = task_stack_page(task);
	int node = NUMA_NO_NODE;
	unsigned long offset;

	for (offset = 0; offset < THREAD_SIZE; offset += PAGE_SIZE) {
		void *addr = stack + offset;
		struct page *page = is_vmalloc_addr(addr) ?
				    vmalloc_to_page(addr) : virt_to_page(addr);
		int page_node = page_to_nid(page);

		if (node == NUMA_NO_NODE)
			node = page_node;
		else if (page_node != node)
			return NUMA_NO_NODE;
	}

	return node;
}

static int nvq_checked_node(const nv_kthread_q_t *q, int node)
{
	if (node == NV_KTHREAD_NO_NODE)
		return node;

	if (node >= 0 && node < nr_node_ids && node_online(node))
		return node;

	if (!nvq_absorb_expected_misuse(q))
		pr_warn_once("node %d is invalid or offline; creating the queue thread with no node preference\n",
			     node);
	return NV_KTHREAD_NO_NODE;
}

/*
 * Creates the queue's thread without waking it. With a preferred node,
 * creates up to NVQ_NODE_PLACEMENT_TRIES threads until one has its stack
 * on that node, and keeps the last one created. Rejected threads stay
 * alive until the search ends, so that the kernel's stack cache cannot
 * hand the same remote stack back. Then they are stopped without ever
 * running nvq_thread_main().
 */
static struct task_struct *nvq_create_thread(nv_kthread_q_t *q,
					     const char *qname, int node)
{
	struct task_struct *threads[NVQ_NODE_PLACEMENT_TRIES];
	struct task_struct *thread;
	int count = 0;

	do {
		/* "%s": the name is plain text, never a format string. */
		thread = kthread_create_on_node(nvq_thread_main, q, node,
						"%s", qname);
		if (IS_ERR(thread))
			break;

		threads[count++] = thread;
	} while (node != NV_KTHREAD_NO_NODE &&
		 nvq_task_stack_node(thread) != node &&
		 count < NVQ_NODE_PLACEMENT_TRIES);

	if (count == 0)
		return thread;

	thread = threads[--count];
	while (count-- > 0)
		kthread_stop(threads[count]);
	return thread;
}

int nv_kthread_q_init_on_node(nv_kthread_q_t *q, const char *qname,
			      int preferred_node)
{
	struct task_struct *thread;
	int ret;

	if (unlikely(!q)) {
		nvq_warn_misuse(q, "init of a NULL queue\n");
		return -EINVAL;
	}

	/* Zeroed first, so that stop does nothing if init fails below. */
	memset(q, 0, sizeof(*q));

	if (unlikely(!qname)) {
		nvq_warn_misuse(q, "init of a queue with a NULL name\n");
		return -EINVAL;
	}

	if (unlikely(!nvq_can_sleep())) {
		nvq_warn_misuse(q, "init of queue %s from atomic context\n",
				qname);
		return -EINVAL;
	}

	INIT_LIST_HEAD(&q->q_list_head);
	raw_spin_lock_init(&q->q_lock);
	sema_init(&q->q_sem, 0);
	atomic_set(&q->main_loop_should_exit, 0);

	ret = nvq_lockdep_init(q);
	if (ret)
		return ret;

	thread = nvq_create_thread(q, qname,
				   nvq_checked_node(q, preferred_node));
	if (IS_ERR(thread)) {
		nvq_lockdep_destroy(q);
		return PTR_ERR(thread);
	}

	WRITE_ONCE(q->q_kthread, thread);
	wake_up_process(thread);
	return 0;
}
EXPORT_SYMBOL(nv_kthread_q_init_on_node);

int nv_kthread_q_init(nv_kthread_q_t *q, const char *qname)
{
	return nv_kthread_q_init_on_node(q, qname, numa_node_id());
}
EXPORT_SYMBOL(nv_kthread_q_init);

void nv_kthread_q_stop(nv_kthread_q_t *q)
{
	struct task_struct *thread;
	bool already_stopping;
	unsigned long flags;

	if (unlikely(!q)) {
		nvq_warn_misuse(q, "stop of a NULL queue\n");
		return;
	}

	/* Zeroed, failed to start, or already stopped: nothing to do. */
	thread = READ_ONCE(q->q_kthread);
	if (!thread)
		return;

	if (unlikely(thread == current)) {
		nvq_warn_misuse(q, "stop from a callback of queue %s would deadlock; not stopping\n",
				thread->comm);
		return;
	}

	if (unlikely(!nvq_can_sleep())) {
		nvq_warn_misuse(q, "stop of queue %s from atomic context; not stopping\n",
				thread->comm);
		return;
	}

	nv_kthread_q_flush(q);

	/*
	 * From here on schedule rejects items. Those it accepted before are
	 * still linked. The thread runs them all and leaves once it finds
	 * the list empty with the flag set. If it sleeps, the wake-up sends
	 * it to that final check.
	 */
	raw_spin_lock_irqsave(&q->q_lock, flags);
	already_stopping = atomic_read(&q->main_loop_should_exit);
	if (!already_stopping) {
		atomic_set(&q->main_loop_should_exit, 1);
		nvq_wake_thread_locked(q);
	}
	raw_spin_unlock_irqrestore(&q->q_lock, flags);

	if (unlikely(already_stopping)) {
		nvq_warn_misuse(q, "stop of queue %s while another stop is running\n",
				thread->comm);
		return;
	}

	kthread_stop(thread);
	WRITE_ONCE(q->q_kthread, NULL);
	nvq_lockdep_destroy(q);
}
EXPORT_SYMBOL(nv_kthread_q_stop);

/* The self-test reaches the static helpers above, so it is built here. */
#include "nv-kthread-q-selftest.c"

static bool run_self_test = true;
module_param(run_self_test, bool, 0444);
MODULE_PARM_DESC(run_self_test,
		 "Run the self-test at load, and fail the load if it fails (default: 1)");

static int __init nvq_module_init(void)
{
	pr_info("version %s\n", NV_KTHREAD_Q_VERSION);

	/* Same convention as the kernel's lib/test_* modules. */
	if (run_self_test && nv_kthread_q_run_self_test() != 0)
		return -EINVAL;

	return 0;
}
module_init(nvq_module_init);

static void __exit nvq_module_exit(void)
{
}
module_exit(nvq_module_exit);

MODULE_DESCRIPTION("Deferred-work queue with one kernel thread per queue (nv_kthread_q API)");
MODULE_VERSION(NV_KTHREAD_Q_VERSION);
MODULE_LICENSE("Dual MIT/GPL");
