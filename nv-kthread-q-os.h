/* SPDX-License-Identifier: MIT */
/*
 * Layout of the queue and item structs. Callers allocate both (statically,
 * on the heap or inside their own objects), so the layout is public. Treat
 * every field as private to nv-kthread-q except where noted.
 *
 * Locking:
 *
 * q_lock is a raw spinlock taken with interrupts disabled. It protects
 * q_list_head, the q_list_node of every item linked on it, and writes of
 * main_loop_should_exit. It is raw so that scheduling stays legal from
 * hard-IRQ context on PREEMPT_RT, where a spinlock_t sleeps. It is only
 * held for one list operation and at most one up().
 *
 * q_sem wakes the thread, which sleeps in down() only after it found the
 * list empty and set q_thread_waiting, both under q_lock. The next schedule
 * or flush that adds an item, or stop, clears the flag and calls up() once
 * before q_lock is released. So the count stays at 0 or 1 while the queue
 * runs, and a busy queue, whose thread does not wait, makes no semaphore
 * call per item.
 *
 * q_kthread is written only by init and stop, which the caller must not
 * run concurrently with each other. Schedule and flush read it without the
 * lock, only to reject a queue that is not running. The exit flag, read
 * under q_lock, decides whether an item is accepted.
 */
#ifndef __NV_KTHREAD_QUEUE_OS_H__
#define __NV_KTHREAD_QUEUE_OS_H__

#include <linux/atomic.h>
#include <linux/list.h>
#include <linux/lockdep.h>
#include <linux/numa.h>
#include <linux/semaphore.h>
#include <linux/spinlock.h>

struct task_struct;

/* The preferred_node value that expresses no NUMA preference. */
#define NV_KTHREAD_NO_NODE NUMA_NO_NODE

struct nv_kthread_q {
	struct list_head q_list_head;		/* q_lock */
	raw_spinlock_t q_lock;
	struct semaphore q_sem;			/* up() wakes the thread */
	bool q_thread_waiting;			/* q_lock */

	/* Set under q_lock by stop; from then on schedule returns 0. */
	atomic_t main_loop_should_exit;

	/* The queue's thread; non-NULL while the queue is running. */
	struct task_struct *q_kthread;

#ifdef CONFIG_LOCKDEP
	/*
	 * Acquired around every callback and by flush, so that lockdep sees
	 * a flush waiting on the callbacks it flushes. The key is allocated
	 * per queue because a queue may be static, and lockdep only accepts
	 * registered keys from dynamic memory.
	 */
	struct lockdep_map q_lockdep_map;
	struct lock_class_key *q_lockdep_key;
#endif
};

struct nv_kthread_q_item {
	/* Linked on q_list_head while pending, otherwise empty. q_lock. */
	struct list_head q_list_node;
	nv_q_func_t function_to_run;
	void *function_args;
};

#endif /* __NV_KTHREAD_QUEUE_OS_H__ */
