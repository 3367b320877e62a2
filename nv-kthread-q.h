/* SPDX-License-Identifier: MIT */
/*
 * nv_kthread_q: a small deferred-work queue served by one dedicated kernel
 * thread per queue.
 *
 * It fills the same role as a named workqueue, with far less machinery. A
 * caller queues an item (a function and its argument) from any context,
 * hard IRQ included. The queue's own thread runs the items one at a time,
 * in the order they were queued. Items queued on different queues
 * run in different threads.
 *
 * Callers allocate queues and items themselves, so that a top-half
 * interrupt handler can queue a pre-allocated item without allocating
 * memory. The API never allocates or frees an item.
 *
 * Typical use:
 *
 *	ret = nv_kthread_q_init(&q, "mydrv_bh");
 *	if (ret)
 *		return ret;
 *	nv_kthread_q_item_init(&item, mydrv_bottom_half, dev);
 *	...
 *	nv_kthread_q_schedule_q_item(&q, &item);	(from the ISR)
 *	...
 *	nv_kthread_q_stop(&q);				(at teardown)
 */
#ifndef __NV_KTHREAD_QUEUE_H__
#define __NV_KTHREAD_QUEUE_H__

struct nv_kthread_q;
struct nv_kthread_q_item;
typedef struct nv_kthread_q nv_kthread_q_t;
typedef struct nv_kthread_q_item nv_kthread_q_item_t;

typedef void (*nv_q_func_t)(void *args);

#include "nv-kthread-q-os.h"

/**
 * nv_kthread_q_init_on_node() - Set up a queue and start its thread.
 * @q: queue to set up. Its previous contents are ignored and overwritten.
 * @qname: name of the thread, as shown by ps(1). Used as plain text, not as
 *	a format string; the kernel keeps the first 15 characters.
 * @preferred_node: NUMA node for the thread's stack, or NV_KTHREAD_NO_NODE.
 *	An invalid or offline node is logged once and replaced by
 *	NV_KTHREAD_NO_NODE.
 *
 * The queue starts empty. Placement of the stack is best effort: when the
 * stack lands on another node, the thread is created again, up to three
 * times in all. The thread's CPU affinity is left to the caller.
 *
 * A queue must be stopped with nv_kthread_q_stop() before it is set up
 * again. Calling this on a running queue leaks its thread and corrupts it.
 *
 * Context: Process context; sleeps. From atomic context, or with a NULL
 * @q or @qname, it warns and returns -EINVAL.
 * Return: 0 on success, or a negative errno. On failure the queue is left
 * in a state where nv_kthread_q_stop() does nothing.
 */
int nv_kthread_q_init_on_node(nv_kthread_q_t *q, const char *qname,
			      int preferred_node);

/**
 * nv_kthread_q_init() - Set up a queue whose thread starts on this node.
 * @q: queue to set up.
 * @qname: name of the thread; see nv_kthread_q_init_on_node().
 *
 * Same as nv_kthread_q_init_on_node() with the NUMA node of the calling
 * CPU as the preferred node, so the stack placement check applies too.
 *
 * Context: Process context; sleeps.
 * Return: 0 on success, or a negative errno.
 */
int nv_kthread_q_init(nv_kthread_q_t *q, const char *qname);

/**
 * nv_kthread_q_stop() - Flush a queue, then end its thread.
 * @q: queue to stop.
 *
 * Runs every pending item, including one final run of an item that
 * reschedules itself (see nv_kthread_q_flush()), then stops the thread.
 * Once stop has begun, nv_kthread_q_schedule_q_item() returns 0 for this
 * queue, and every item it accepted before that still runs. A stopped
 * queue may be set up again with nv_kthread_q_init().
 *
 * Stopping a zeroed queue, a queue whose init failed, or a queue that is
 * already stopped does nothing. Calling it from one of the queue's own
 * callbacks would deadlock, so it warns and returns without stopping.
 *
 * Make sure nothing schedules on the queue once stop has returned (for an
 * interrupt source, free_irq() or synchronize_irq() first): a schedule
 * that races stop returns 0 quietly, but one after stop warns. Init and
 * stop of one queue must not run concurrently. A second stop that starts
 * while the first is running warns and returns before the thread ends.
 *
 * Context: Process context; sleeps. From atomic context it warns and
 * returns without stopping.
 */
void nv_kthread_q_stop(nv_kthread_q_t *q);

/**
 * nv_kthread_q_flush() - Wait until queued items and their follow-ups ran.
 * @q: a running queue.
 *
 * Returns once every item queued before the call has run, and every item
 * those items queued while running has run too. This makes the following
 * shutdown pattern safe for an item that reschedules itself: set a flag
 * that the item checks before rescheduling, then flush. Any run that missed
 * the flag is drained along with the one item it queued.
 *
 * Flushing a queue that is not running or is being stopped, or flushing
 * from one of the queue's own callbacks (which would deadlock), warns and
 * returns at once.
 *
 * Context: Process context; sleeps. From atomic context it warns and
 * returns without flushing.
 */
void nv_kthread_q_flush(nv_kthread_q_t *q);

/**
 * nv_kthread_q_item_init() - Set the function and argument of an item.
 * @q_item: item to set up.
 * @function_to_run: function the queue's thread calls with @function_args.
 *	It runs in process context and may sleep, but it delays every item
 *	queued after it.
 * @function_args: argument passed to @function_to_run.
 *
 * Must be called once before the item is first scheduled, and never while
 * the item is pending.
 *
 * Context: Any context.
 */
void nv_kthread_q_item_init(nv_kthread_q_item_t *q_item,
			    nv_q_func_t function_to_run,
			    void *function_args);

/**
 * nv_kthread_q_schedule_q_item() - Queue an item to run on a queue's thread.
 * @q: a running queue.
 * @q_item: item set up with nv_kthread_q_item_init().
 *
 * An item is pending from this call until the queue's thread unlinks it,
 * just before calling its function. Scheduling a pending item does
 * nothing, so an item runs once however often it is scheduled while
 * pending. The item is unlinked before the call, so its function may
 * schedule the item again or free it. The queue does not touch the item
 * after the call. An item may be pending on only one queue at a time.
 *
 * Scheduling on a queue that is not running warns once and returns 0.
 *
 * Context: Any context, including hard IRQ (also on PREEMPT_RT) and
 * several CPUs at once. Does not sleep.
 * Return: 1 if the item was queued. 0 if it was already pending, or the
 * queue is stopping, stopped or was never started. The return value does
 * not tell these cases apart.
 */
int nv_kthread_q_schedule_q_item(nv_kthread_q_t *q,
				 nv_kthread_q_item_t *q_item);

/**
 * nv_kthread_q_run_self_test() - Run the built-in tests of the queue.
 *
 * Logs a FAIL line for each failing case and one verdict line.
 *
 * Context: Process context; sleeps for up to tens of seconds.
 * Return: 0 if every case passed, or -1 if any failed.
 */
int nv_kthread_q_run_self_test(void);

#endif /* __NV_KTHREAD_QUEUE_H__ */
