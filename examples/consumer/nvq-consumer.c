// SPDX-License-Identifier: MIT
/*
 * An example driver that uses nv_kthread_q the way NVIDIA-style drivers do:
 *
 * - a hard-IRQ top half (a hard-mode hrtimer plays the device
 *   interrupt) that schedules a pre-allocated bottom-half item;
 * - a background item that reschedules itself until unload, shut down by
 *   setting a flag and then flushing;
 * - one queue created with nv_kthread_q_init_on_node().
 *
 * It runs for a fixed number of interrupts after load, and reports what
 * ran at unload.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/topology.h>

#include "nv-kthread-q.h"

#define CONSUMER_INTERRUPTS 200
#define CONSUMER_INTERRUPT_PERIOD_US 500

struct consumer_device {
	nv_kthread_q_t q;

	/* Bottom half, pre-allocated so that the top half never allocates. */
	nv_kthread_q_item_t bottom_half;
	struct hrtimer fake_irq;
	atomic_t interrupts;
	atomic_t interrupts_queued;	/* schedule calls that returned 1 */
	atomic_t bottom_half_runs;

	/* Background work that keeps rescheduling itself. */
	nv_kthread_q_item_t background;
	bool background_stop;		/* set once, before the final flush */
	atomic_t background_runs;
};

static struct consumer_device consumer;

static void consumer_bottom_half(void *args)
{
	struct consumer_device *dev = args;

	atomic_inc(&dev->bottom_half_runs);
}

static enum hrtimer_restart consumer_top_half(struct hrtimer *timer)
{
	struct consumer_device *dev = container_of(timer, struct consumer_device,
						   fake_irq);

	if (nv_kthread_q_schedule_q_item(&dev->q, &dev->bottom_half))
		atomic_inc(&dev->interrupts_queued);

	if (atomic_inc_return(&dev->interrupts) >= CONSUMER_INTERRUPTS)
		return HRTIMER_NORESTART;

	hrtimer_forward_now(timer,
			    ns_to_ktime(CONSUMER_INTERRUPT_PERIOD_US * NSEC_PER_USEC));
	return HRTIMER_RESTART;
}

static void consumer_background(void *args)
{
	struct consumer_device *dev = args;

	atomic_inc(&dev->background_runs);
	if (!READ_ONCE(dev->background_stop))
		nv_kthread_q_schedule_q_item(&dev->q, &dev->background);
}

static int __init consumer_init(void)
{
	struct consumer_device *dev = &consumer;
	int ret;

	ret = nv_kthread_q_init_on_node(&dev->q, "nvq_consumer",
					numa_node_id());
	if (ret) {
		pr_err("queue init failed: %d\n", ret);
		return ret;
	}

	nv_kthread_q_item_init(&dev->bottom_half, consumer_bottom_half, dev);
	nv_kthread_q_item_init(&dev->background, consumer_background, dev);
	nv_kthread_q_schedule_q_item(&dev->q, &dev->background);

	hrtimer_init(&dev->fake_irq, CLOCK_MONOTONIC, HRTIMER_MODE_REL_HARD);
	dev->fake_irq.function = consumer_top_half;
	hrtimer_start(&dev->fake_irq,
		      ns_to_ktime(CONSUMER_INTERRUPT_PERIOD_US * NSEC_PER_USEC),
		      HRTIMER_MODE_REL_HARD);

	pr_info("started: %d fake interrupts every %d us\n",
		CONSUMER_INTERRUPTS, CONSUMER_INTERRUPT_PERIOD_US);
	return 0;
}
module_init(consumer_init);

static void __exit consumer_exit(void)
{
	struct consumer_device *dev = &consumer;

	/* No more top halves, then stop the background item and the queue. */
	hrtimer_cancel(&dev->fake_irq);
	WRITE_ONCE(dev->background_stop, true);
	nv_kthread_q_flush(&dev->q);
	nv_kthread_q_stop(&dev->q);

	pr_info("stopped: %d interrupts, %d bottom halves queued, %d run; background item ran %d times\n",
		atomic_read(&dev->interrupts),
		atomic_read(&dev->interrupts_queued),
		atomic_read(&dev->bottom_half_runs),
		atomic_read(&dev->background_runs));
}
module_exit(consumer_exit);

MODULE_DESCRIPTION("Example driver using the nv_kthread_q API");
MODULE_LICENSE("Dual MIT/GPL");
