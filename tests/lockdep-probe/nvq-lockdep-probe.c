// SPDX-License-Identifier: MIT
/*
 * Makes lockdep see a flush that could deadlock, without deadlocking: a
 * callback takes probe_mutex, then the module flushes the queue while
 * holding probe_mutex. Were the callback queued at that moment, neither
 * side could go on. The queue is empty, so the flush returns, but lockdep
 * must report the circular dependency between probe_mutex and the queue.
 *
 * Only for the debug kernel of the test suite: the report it provokes
 * fails any boot that expects a clean log.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/mutex.h>

#include "nv-kthread-q.h"

static DEFINE_MUTEX(probe_mutex);

static void probe_take_mutex(void *args)
{
	mutex_lock(&probe_mutex);
	mutex_unlock(&probe_mutex);
}

static int __init probe_init(void)
{
	nv_kthread_q_item_t item;
	nv_kthread_q_t q;
	int ret;

	ret = nv_kthread_q_init(&q, "nvq-ld-probe");
	if (ret)
		return ret;

	/* Queue -> probe_mutex: the callback takes the mutex. */
	nv_kthread_q_item_init(&item, probe_take_mutex, NULL);
	nv_kthread_q_schedule_q_item(&q, &item);
	nv_kthread_q_flush(&q);

	/* probe_mutex -> queue: flush while holding the mutex. */
	pr_info("flushing while holding probe_mutex\n");
	mutex_lock(&probe_mutex);
	nv_kthread_q_flush(&q);
	mutex_unlock(&probe_mutex);

	nv_kthread_q_stop(&q);
	pr_info("done\n");
	return 0;
}
module_init(probe_init);

static void __exit probe_exit(void)
{
}
module_exit(probe_exit);

MODULE_DESCRIPTION("Provokes a lockdep report through nv_kthread_q_flush()");
MODULE_LICENSE("Dual MIT/GPL");
