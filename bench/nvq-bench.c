// SPDX-License-Identifier: MIT
/*
 * nvq-bench: measures nv_kthread_q against the kernel's own deferred-work
 * mechanisms in one boot, with the same workloads:
 *
 *   nvq             nv_kthread_q
 *   kthread_worker  kthread_create_worker() + kthread_queue_work()
 *   ordered_wq      alloc_ordered_workqueue()
 *   unbound_wq      alloc_workqueue(WQ_UNBOUND)
 *   floor           a bare wake_up_process() of a second kthread, no queue
 *
 * The whole benchmark runs at load time in a kthread of its own. Results
 * are kept in memory and printed only after the last measurement, so that
 * console output does not disturb the timings. Each figure of each
 * repetition is one line:
 *
 *   nvq_bench: result impl=<impl> metric=<metric> rep=<n> value=<n>
 *
 * followed by "nvq_bench: done". A figure that does not apply to an
 * implementation (for example throughput of the floor, which has no queue)
 * is not printed. bench/run-bench.sh turns these lines into tables.
 *
 * The load fails if a queue or an allocation cannot be set up, or if an
 * implementation rejects an item or returns from a flush before its
 * items ran. It never fails because of a measured time.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/string.h>
#include <linux/workqueue.h>

#include "nv-kthread-q.h"

static unsigned int samples = 10000;
module_param(samples, uint, 0444);
MODULE_PARM_DESC(samples,
		 "Latency samples per implementation and repetition (default: 10000)");

static unsigned int gap_us = 100;
module_param(gap_us, uint, 0444);
MODULE_PARM_DESC(gap_us,
		 "Pause in microseconds between two latency samples, so that each sample starts on an idle queue (default: 100)");

static unsigned int items = 100000;
module_param(items, uint, 0444);
MODULE_PARM_DESC(items,
		 "Items per throughput run, shared among the producers (default: 100000)");

static unsigned int flush_runs = 1000;
module_param(flush_runs, uint, 0444);
MODULE_PARM_DESC(flush_runs,
		 "Flushes of an empty queue per repetition (default: 1000)");

static unsigned int pending_flush_runs = 20;
module_param(pending_flush_runs, uint, 0444);
MODULE_PARM_DESC(pending_flush_runs,
		 "Flushes with 1000 pending items per repetition (default: 20)");

static unsigned int init_stop_runs = 100;
module_param(init_stop_runs, uint, 0444);
MODULE_PARM_DESC(init_stop_runs,
		 "Queue init and stop pairs per repetition (default: 100)");

static unsigned int idle_ms = 3000;
module_param(idle_ms, uint, 0444);
MODULE_PARM_DESC(idle_ms,
		 "Milliseconds over which the context switches of idle queue threads are counted (default: 3000)");

static unsigned int reps = 5;
module_param(reps, uint, 0444);
MODULE_PARM_DESC(reps, "Repetitions of every workload (default: 5)");

static char *workloads = "all";
module_param(workloads, charp, 0444);
MODULE_PARM_DESC(workloads,
		 "Comma-separated workloads to run: latency, throughput, flush, init_stop, idle, or all (default: all)");

/* Items queued before a flush in the "flush with pending items" workload. */
#define BENCH_PENDING_ITEMS 1000

/* Producer counts of the throughput workload. */
static const unsigned int bench_producer_counts[] = { 1, 4, 8 };
#define BENCH_MAX_PRODUCERS 8

/* Upper bounds of the parameters, so that a load cannot run for hours. */
#define BENCH_MAX_REPS 100
#define BENCH_MAX_SAMPLES 1000000
#define BENCH_MAX_ITEMS 10000000

enum bench_impl {
	BENCH_NVQ,
	BENCH_KTHREAD_WORKER,
	BENCH_ORDERED_WQ,
	BENCH_UNBOUND_WQ,
	BENCH_FLOOR,
	BENCH_IMPL_COUNT,
};

static const char * const bench_impl_names[BENCH_IMPL_COUNT] = {
	[BENCH_NVQ] = "nvq",
	[BENCH_KTHREAD_WORKER] = "kthread_worker",
	[BENCH_ORDERED_WQ] = "ordered_wq",
	[BENCH_UNBOUND_WQ] = "unbound_wq",
	[BENCH_FLOOR] = "floor",
};

enum bench_metric {
	BENCH_LAT_P50,
	BENCH_LAT_P90,
	BENCH_LAT_P99,
	BENCH_LAT_MAX,
	BENCH_TPUT_1,
	BENCH_TPUT_4,
	BENCH_TPUT_8,
	BENCH_SCHED_1,
	BENCH_SCHED_4,
	BENCH_SCHED_8,
	BENCH_FLUSH_EMPTY,
	BENCH_FLUSH_PENDING,
	BENCH_FLUSH_PENDING_PRERUN,
	BENCH_INIT_STOP,
	BENCH_IDLE_CSW,
	BENCH_METRIC_COUNT,
};

/* Units are part of the names: ns, items_per_s or a plain count. */
static const char * const bench_metric_names[BENCH_METRIC_COUNT] = {
	[BENCH_LAT_P50] = "latency_p50_ns",
	[BENCH_LAT_P90] = "latency_p90_ns",
	[BENCH_LAT_P99] = "latency_p99_ns",
	[BENCH_LAT_MAX] = "latency_max_ns",
	[BENCH_TPUT_1] = "throughput_1_items_per_s",
	[BENCH_TPUT_4] = "throughput_4_items_per_s",
	[BENCH_TPUT_8] = "throughput_8_items_per_s",
	[BENCH_SCHED_1] = "schedule_1_ns",
	[BENCH_SCHED_4] = "schedule_4_ns",
	[BENCH_SCHED_8] = "schedule_8_ns",
	[BENCH_FLUSH_EMPTY] = "flush_empty_ns",
	[BENCH_FLUSH_PENDING] = "flush_1000_ns",
	[BENCH_FLUSH_PENDING_PRERUN] = "flush_1000_prerun_items",
	[BENCH_INIT_STOP] = "init_stop_ns",
	[BENCH_IDLE_CSW] = "idle_context_switches",
};

enum bench_workload {
	BENCH_WL_LATENCY = BIT(0),
	BENCH_WL_THROUGHPUT = BIT(1),
	BENCH_WL_FLUSH = BIT(2),
	BENCH_WL_INIT_STOP = BIT(3),
	BENCH_WL_IDLE = BIT(4),
	BENCH_WL_ALL = BIT(5) - 1,
};

/* A queue of any implementation. Only the members of its kind are used. */
struct bench_queue {
	enum bench_impl impl;
	nv_kthread_q_t nvq;
	struct kthread_worker *worker;
	struct workqueue_struct *wq;

	/* The floor: a thread that runs the one item handed to it. */
	struct task_struct *floor_thread;
	struct bench_item *floor_item;
};

/* An item of any implementation, with what its callback does when it runs. */
struct bench_item {
	union {
		nv_kthread_q_item_t nvq_item;
		struct kthread_work kwork;
		struct work_struct work;
	};
	void (*action)(struct bench_item *item);
	void *ctx;
	u64 run_ns;		/* ktime_get_ns() when the callback ran */
};

/*
 * Results of the whole load, printed at the end. U64_MAX marks a figure
 * that was not measured.
 */
static u64 (*bench_results)[BENCH_METRIC_COUNT][BENCH_MAX_REPS];

static void bench_record(enum bench_impl impl, enum bench_metric metric,
			 unsigned int rep, u64 value)
{
	bench_results[impl][metric][rep] = value;
}

/* Callbacks of each implementation, all calling the item's action. */

static void bench_nvq_callback(void *args)
{
	struct bench_item *item = args;

	item->action(item);
}

static void bench_kwork_callback(struct kthread_work *kwork)
{
	struct bench_item *item = container_of(kwork, struct bench_item, kwork);

	item->action(item);
}

static void bench_work_callback(struct work_struct *work)
{
	struct bench_item *item = container_of(work, struct bench_item, work);

	item->action(item);
}

/*
 * Runs the item handed over by bench_schedule(), then sleeps until the next
 * one. Setting the task state before reading floor_item pairs with the
 * store before wake_up_process(), so that no hand-over is missed.
 */
static int bench_floor_main(void *data)
{
	struct bench_queue *bq = data;
	struct bench_item *item;

	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		item = xchg(&bq->floor_item, NULL);
		if (item) {
			__set_current_state(TASK_RUNNING);
			item->action(item);
			continue;
		}
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

static int bench_queue_init(struct bench_queue *bq, enum bench_impl impl)
{
	memset(bq, 0, sizeof(*bq));
	bq->impl = impl;

	switch (impl) {
	case BENCH_NVQ:
		return nv_kthread_q_init(&bq->nvq, "nvq_bench_nvq");
	case BENCH_KTHREAD_WORKER:
		bq->worker = kthread_create_worker(0, "nvq_bench_kw");
		if (IS_ERR(bq->worker))
			return PTR_ERR(bq->worker);
		return 0;
	case BENCH_ORDERED_WQ:
		bq->wq = alloc_ordered_workqueue("nvq_bench_ordered", 0);
		return bq->wq ? 0 : -ENOMEM;
	case BENCH_UNBOUND_WQ:
		bq->wq = alloc_workqueue("nvq_bench_unbound", WQ_UNBOUND, 0);
		return bq->wq ? 0 : -ENOMEM;
	case BENCH_FLOOR:
		bq->floor_thread = kthread_run(bench_floor_main, bq,
					       "nvq_bench_floor");
		if (IS_ERR(bq->floor_thread))
			return PTR_ERR(bq->floor_thread);
		return 0;
	default:
		return -EINVAL;
	}
}

static void bench_queue_stop(struct bench_queue *bq)
{
	switch (bq->impl) {
	case BENCH_NVQ:
		nv_kthread_q_stop(&bq->nvq);
		break;
	case BENCH_KTHREAD_WORKER:
		kthread_destroy_worker(bq->worker);
		break;
	case BENCH_ORDERED_WQ:
	case BENCH_UNBOUND_WQ:
		destroy_workqueue(bq->wq);
		break;
	case BENCH_FLOOR:
		kthread_stop(bq->floor_thread);
		break;
	default:
		break;
	}
}

static void bench_item_init(struct bench_queue *bq, struct bench_item *item,
			    void (*action)(struct bench_item *item),
			    void *ctx)
{
	switch (bq->impl) {
	case BENCH_NVQ:
		nv_kthread_q_item_init(&item->nvq_item, bench_nvq_callback,
				       item);
		break;
	case BENCH_KTHREAD_WORKER:
		kthread_init_work(&item->kwork, bench_kwork_callback);
		break;
	case BENCH_ORDERED_WQ:
	case BENCH_UNBOUND_WQ:
		INIT_WORK(&item->work, bench_work_callback);
		break;
	default:
		break;
	}
	item->action = action;
	item->ctx = ctx;
	item->run_ns = 0;
}

/* Returns true if the item was queued (or, for the floor, handed over). */
static bool bench_schedule(struct bench_queue *bq, struct bench_item *item)
{
	switch (bq->impl) {
	case BENCH_NVQ:
		return nv_kthread_q_schedule_q_item(&bq->nvq, &item->nvq_item);
	case BENCH_KTHREAD_WORKER:
		return kthread_queue_work(bq->worker, &item->kwork);
	case BENCH_ORDERED_WQ:
	case BENCH_UNBOUND_WQ:
		return queue_work(bq->wq, &item->work);
	case BENCH_FLOOR:
		if (cmpxchg(&bq->floor_item, NULL, item))
			return false;
		wake_up_process(bq->floor_thread);
		return true;
	default:
		return false;
	}
}

/*
 * Waits until every queued item ran. The floor needs no flush, because its
 * callers wait for each item to run before they hand over the next.
 */
static void bench_flush(struct bench_queue *bq)
{
	switch (bq->impl) {
	case BENCH_NVQ:
		nv_kthread_q_flush(&bq->nvq);
		break;
	case BENCH_KTHREAD_WORKER:
		kthread_flush_worker(bq->worker);
		break;
	case BENCH_ORDERED_WQ:
	case BENCH_UNBOUND_WQ:
		flush_workqueue(bq->wq);
		break;
	default:
		break;
	}
}

/* The thread that runs the queue's items, or NULL if the queue has none. */
static struct task_struct *bench_queue_thread(struct bench_queue *bq)
{
	switch (bq->impl) {
	case BENCH_NVQ:
		/* Read-only use of a field that is private to nv-kthread-q. */
		return bq->nvq.q_kthread;
	case BENCH_KTHREAD_WORKER:
		return bq->worker->task;
	case BENCH_FLOOR:
		return bq->floor_thread;
	default:
		return NULL;
	}
}

static int bench_compare_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static u64 bench_median(u64 *values, unsigned int count)
{
	sort(values, count, sizeof(*values), bench_compare_u64, NULL);
	return values[count / 2];
}

/* Latency: one item scheduled on an idle queue, until its callback runs. */

static void bench_action_latency(struct bench_item *item)
{
	item->run_ns = ktime_get_ns();
	complete(item->ctx);
}

static int bench_latency(struct bench_queue *bq, u64 *buffer,
			 unsigned int rep)
{
	struct completion done;
	struct bench_item *item;
	unsigned int i;
	u64 start;

	item = kzalloc(sizeof(*item), GFP_KERNEL);
	if (!item)
		return -ENOMEM;

	init_completion(&done);
	bench_item_init(bq, item, bench_action_latency, &done);

	for (i = 0; i < samples; i++) {
		reinit_completion(&done);
		start = ktime_get_ns();
		if (!bench_schedule(bq, item)) {
			pr_err("latency: %s rejected the item at sample %u\n",
			       bench_impl_names[bq->impl], i);
			kfree(item);
			return -EIO;
		}
		wait_for_completion(&done);
		buffer[i] = item->run_ns - start;

		/* Let the queue's thread go back to sleep. */
		usleep_range(gap_us, gap_us + gap_us / 2 + 1);
	}

	bench_flush(bq);
	kfree(item);

	sort(buffer, samples, sizeof(*buffer), bench_compare_u64, NULL);
	bench_record(bq->impl, BENCH_LAT_P50, rep, buffer[samples / 2]);
	bench_record(bq->impl, BENCH_LAT_P90, rep,
		     buffer[(u64)samples * 90 / 100]);
	bench_record(bq->impl, BENCH_LAT_P99, rep,
		     buffer[(u64)samples * 99 / 100]);
	bench_record(bq->impl, BENCH_LAT_MAX, rep, buffer[samples - 1]);
	return 0;
}

/* Throughput: producers schedule distinct items on one queue at once. */

struct bench_throughput {
	struct bench_queue *bq;
	struct bench_item *items;
	atomic_t remaining;
	u64 end_ns;
	struct completion all_ran;
	struct completion start;
	bool abort;
};

struct bench_producer {
	struct bench_throughput *run;
	unsigned int first;
	unsigned int count;
	unsigned int rejected;
	u64 schedule_ns;	/* time spent in the schedule loop */
	struct completion finished;
	struct task_struct *task;
};

static void bench_action_count(struct bench_item *item)
{
	struct bench_throughput *run = item->ctx;

	if (atomic_dec_and_test(&run->remaining)) {
		run->end_ns = ktime_get_ns();
		complete(&run->all_ran);
	}
}

static int bench_producer_main(void *data)
{
	struct bench_producer *producer = data;
	struct bench_throughput *run = producer->run;
	unsigned int i, end = producer->first + producer->count;
	u64 begin;

	wait_for_completion(&run->start);
	if (!READ_ONCE(run->abort)) {
		begin = ktime_get_ns();
		for (i = producer->first; i < end; i++) {
			if (!bench_schedule(run->bq, &run->items[i]))
				producer->rejected++;
		}
		producer->schedule_ns = ktime_get_ns() - begin;
	}
	complete(&producer->finished);
	return 0;
}

/*
 * Runs one throughput measurement with @producer_count producers. Returns
 * the items per second, and the mean schedule cost in @schedule_ns.
 */
static int bench_throughput_once(struct bench_queue *bq,
				 struct bench_item *item_array,
				 unsigned int producer_count,
				 u64 *items_per_s, u64 *schedule_ns)
{
	struct bench_producer producers[BENCH_MAX_PRODUCERS] = {};
	struct bench_throughput run = {
		.bq = bq,
		.items = item_array,
	};
	unsigned int i, started = 0, per_producer, rejected = 0;
	u64 start_ns, schedule_total = 0;
	int ret = 0;

	atomic_set(&run.remaining, items);
	init_completion(&run.all_ran);
	init_completion(&run.start);
	for (i = 0; i < items; i++)
		bench_item_init(bq, &item_array[i], bench_action_count, &run);

	per_producer = items / producer_count;
	for (i = 0; i < producer_count; i++) {
		struct bench_producer *producer = &producers[i];

		producer->run = &run;
		producer->first = i * per_producer;
		producer->count = i + 1 < producer_count ?
				  per_producer : items - producer->first;
		init_completion(&producer->finished);
		producer->task = kthread_run(bench_producer_main, producer,
					     "nvq_bench_prod%u", i);
		if (IS_ERR(producer->task)) {
			ret = PTR_ERR(producer->task);
			WRITE_ONCE(run.abort, true);
			break;
		}
		get_task_struct(producer->task);
		started++;
	}

	start_ns = ktime_get_ns();
	complete_all(&run.start);

	for (i = 0; i < started; i++) {
		wait_for_completion(&producers[i].finished);
		kthread_stop_put(producers[i].task);
		rejected += producers[i].rejected;
		schedule_total += div_u64(producers[i].schedule_ns,
					  max(producers[i].count, 1U));
	}
	if (ret) {
		/* Some items may be queued; let them run before reuse. */
		bench_flush(bq);
		return ret;
	}
	if (rejected) {
		pr_err("throughput: %s rejected %u items\n",
		       bench_impl_names[bq->impl], rejected);
		bench_flush(bq);
		return -EIO;
	}

	wait_for_completion(&run.all_ran);
	bench_flush(bq);

	*items_per_s = div64_u64((u64)items * NSEC_PER_SEC,
				 max(run.end_ns - start_ns, 1ULL));
	*schedule_ns = div_u64(schedule_total, started);
	return 0;
}

static int bench_throughput(struct bench_queue *bq,
			    struct bench_item *item_array, unsigned int rep)
{
	unsigned int i;
	u64 items_per_s, schedule_ns;
	int ret;

	for (i = 0; i < ARRAY_SIZE(bench_producer_counts); i++) {
		ret = bench_throughput_once(bq, item_array,
					    bench_producer_counts[i],
					    &items_per_s, &schedule_ns);
		if (ret)
			return ret;
		bench_record(bq->impl, BENCH_TPUT_1 + i, rep, items_per_s);
		bench_record(bq->impl, BENCH_SCHED_1 + i, rep, schedule_ns);
	}
	return 0;
}

/* Flush: of an empty queue, and with BENCH_PENDING_ITEMS items pending. */

struct bench_gate {
	struct completion entered;
	struct completion release;
	atomic_t ran;
};

/* Blocks the queue's thread until the measurement releases it. */
static void bench_action_gate(struct bench_item *item)
{
	struct bench_gate *gate = item->ctx;

	complete(&gate->entered);
	wait_for_completion(&gate->release);
}

static void bench_action_gated_count(struct bench_item *item)
{
	struct bench_gate *gate = item->ctx;

	atomic_inc(&gate->ran);
}

static int bench_flush_empty(struct bench_queue *bq, u64 *buffer,
			     unsigned int rep)
{
	unsigned int i;
	u64 start;

	for (i = 0; i < flush_runs; i++) {
		start = ktime_get_ns();
		bench_flush(bq);
		buffer[i] = ktime_get_ns() - start;
	}
	bench_record(bq->impl, BENCH_FLUSH_EMPTY, rep,
		     bench_median(buffer, flush_runs));
	return 0;
}

/*
 * A gate item blocks the queue's thread while BENCH_PENDING_ITEMS items
 * are queued behind it. The time runs from the release of the gate to the
 * return of the flush. An unbound workqueue runs queued items on other
 * workers meanwhile, so the items that already ran before the release are
 * recorded too.
 */
static int bench_flush_pending(struct bench_queue *bq,
			       struct bench_item *item_array, u64 *buffer,
			       u64 *prerun_buffer, unsigned int rep)
{
	struct bench_item *gate_item = &item_array[BENCH_PENDING_ITEMS];
	struct bench_gate gate;
	unsigned int i, run_index;
	u64 start;

	for (run_index = 0; run_index < pending_flush_runs; run_index++) {
		init_completion(&gate.entered);
		init_completion(&gate.release);
		atomic_set(&gate.ran, 0);

		bench_item_init(bq, gate_item, bench_action_gate, &gate);
		for (i = 0; i < BENCH_PENDING_ITEMS; i++)
			bench_item_init(bq, &item_array[i],
					bench_action_gated_count, &gate);

		if (!bench_schedule(bq, gate_item))
			goto rejected;
		wait_for_completion(&gate.entered);
		for (i = 0; i < BENCH_PENDING_ITEMS; i++) {
			if (!bench_schedule(bq, &item_array[i])) {
				complete(&gate.release);
				goto rejected;
			}
		}

		prerun_buffer[run_index] = atomic_read(&gate.ran);
		start = ktime_get_ns();
		complete(&gate.release);
		bench_flush(bq);
		buffer[run_index] = ktime_get_ns() - start;

		if (atomic_read(&gate.ran) != BENCH_PENDING_ITEMS) {
			pr_err("flush: %s returned with %d of %d items run\n",
			       bench_impl_names[bq->impl],
			       atomic_read(&gate.ran), BENCH_PENDING_ITEMS);
			return -EIO;
		}
	}

	bench_record(bq->impl, BENCH_FLUSH_PENDING, rep,
		     bench_median(buffer, pending_flush_runs));
	bench_record(bq->impl, BENCH_FLUSH_PENDING_PRERUN, rep,
		     bench_median(prerun_buffer, pending_flush_runs));
	return 0;

rejected:
	pr_err("flush: %s rejected an item\n", bench_impl_names[bq->impl]);
	bench_flush(bq);
	return -EIO;
}

/* Init and stop of a queue, as a pair, on an otherwise idle system. */
static int bench_init_stop(enum bench_impl impl, u64 *buffer,
			   unsigned int rep)
{
	struct bench_queue *bq;
	unsigned int i;
	u64 start;
	int ret = 0;

	bq = kzalloc(sizeof(*bq), GFP_KERNEL);
	if (!bq)
		return -ENOMEM;

	for (i = 0; i < init_stop_runs; i++) {
		start = ktime_get_ns();
		ret = bench_queue_init(bq, impl);
		if (ret) {
			pr_err("init_stop: init of %s failed: %d\n",
			       bench_impl_names[impl], ret);
			break;
		}
		bench_queue_stop(bq);
		buffer[i] = ktime_get_ns() - start;
	}
	kfree(bq);
	if (ret)
		return ret;

	bench_record(impl, BENCH_INIT_STOP, rep,
		     bench_median(buffer, init_stop_runs));
	return 0;
}

/* Context switches of the queue's thread, voluntary or not. */
static u64 bench_context_switches(struct bench_queue *bq)
{
	struct task_struct *task = bench_queue_thread(bq);

	return READ_ONCE(task->nvcsw) + READ_ONCE(task->nivcsw);
}

/*
 * Counts the context switches of every idle queue thread over idle_ms, all
 * queues at once. The workqueues have no thread of their own and are left
 * out. Each queue first runs one item, so that its thread is past its
 * start-up and asleep.
 */
static int bench_idle(unsigned int rep)
{
	static const enum bench_impl impls[] = {
		BENCH_NVQ, BENCH_KTHREAD_WORKER, BENCH_FLOOR,
	};
	struct bench_queue *queues;
	struct bench_item *item;
	struct completion done;
	u64 before[ARRAY_SIZE(impls)];
	unsigned int i, started = 0;
	int ret = 0;

	queues = kcalloc(ARRAY_SIZE(impls), sizeof(*queues), GFP_KERNEL);
	item = kzalloc(sizeof(*item), GFP_KERNEL);
	if (!queues || !item) {
		ret = -ENOMEM;
		goto out;
	}

	init_completion(&done);
	for (i = 0; i < ARRAY_SIZE(impls); i++) {
		ret = bench_queue_init(&queues[i], impls[i]);
		if (ret) {
			pr_err("idle: init of %s failed: %d\n",
			       bench_impl_names[impls[i]], ret);
			goto out;
		}
		started++;

		reinit_completion(&done);
		bench_item_init(&queues[i], item, bench_action_latency, &done);
		if (!bench_schedule(&queues[i], item)) {
			ret = -EIO;
			goto out;
		}
		wait_for_completion(&done);
		bench_flush(&queues[i]);
	}

	msleep(100);
	for (i = 0; i < ARRAY_SIZE(impls); i++)
		before[i] = bench_context_switches(&queues[i]);
	msleep(idle_ms);
	for (i = 0; i < ARRAY_SIZE(impls); i++)
		bench_record(impls[i], BENCH_IDLE_CSW, rep,
			     bench_context_switches(&queues[i]) - before[i]);

out:
	while (started-- > 0)
		bench_queue_stop(&queues[started]);
	kfree(item);
	kfree(queues);
	return ret;
}

/* Runs the per-queue workloads of one implementation in one repetition. */
static int bench_one_queue(enum bench_impl impl, unsigned int mask,
			   struct bench_item *item_array, u64 *buffer,
			   u64 *prerun_buffer, unsigned int rep)
{
	struct bench_queue *bq;
	bool has_queue = impl != BENCH_FLOOR;
	int ret;

	bq = kzalloc(sizeof(*bq), GFP_KERNEL);
	if (!bq)
		return -ENOMEM;

	ret = bench_queue_init(bq, impl);
	if (ret) {
		pr_err("init of %s failed: %d\n", bench_impl_names[impl], ret);
		kfree(bq);
		return ret;
	}

	if (!ret && (mask & BENCH_WL_LATENCY))
		ret = bench_latency(bq, buffer, rep);
	if (!ret && has_queue && (mask & BENCH_WL_THROUGHPUT))
		ret = bench_throughput(bq, item_array, rep);
	if (!ret && has_queue && (mask & BENCH_WL_FLUSH))
		ret = bench_flush_empty(bq, buffer, rep);
	if (!ret && has_queue && (mask & BENCH_WL_FLUSH))
		ret = bench_flush_pending(bq, item_array, buffer,
					  prerun_buffer, rep);

	bench_queue_stop(bq);
	kfree(bq);
	return ret;
}

static int bench_parse_workloads(const char *list, unsigned int *mask)
{
	static const struct {
		const char *name;
		unsigned int bit;
	} names[] = {
		{ "all", BENCH_WL_ALL },
		{ "latency", BENCH_WL_LATENCY },
		{ "throughput", BENCH_WL_THROUGHPUT },
		{ "flush", BENCH_WL_FLUSH },
		{ "init_stop", BENCH_WL_INIT_STOP },
		{ "idle", BENCH_WL_IDLE },
	};
	char *copy, *cursor, *word;
	unsigned int i;
	int ret = 0;

	copy = kstrdup(list, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;

	*mask = 0;
	cursor = copy;
	while ((word = strsep(&cursor, ",")) != NULL) {
		if (!*word)
			continue;
		for (i = 0; i < ARRAY_SIZE(names); i++) {
			if (!strcmp(word, names[i].name))
				break;
		}
		if (i == ARRAY_SIZE(names)) {
			pr_err("unknown workload '%s' in workloads=%s (known: all, latency, throughput, flush, init_stop, idle)\n",
			       word, list);
			ret = -EINVAL;
			break;
		}
		*mask |= names[i].bit;
	}
	kfree(copy);

	if (!ret && !*mask) {
		pr_err("workloads=%s names no workload\n", list);
		ret = -EINVAL;
	}
	return ret;
}

static int bench_check_params(void)
{
	if (reps < 1 || reps > BENCH_MAX_REPS) {
		pr_err("reps=%u is invalid; use 1 to %u\n", reps,
		       BENCH_MAX_REPS);
		return -EINVAL;
	}
	if (samples < 1 || samples > BENCH_MAX_SAMPLES) {
		pr_err("samples=%u is invalid; use 1 to %u\n", samples,
		       BENCH_MAX_SAMPLES);
		return -EINVAL;
	}
	if (items < BENCH_MAX_PRODUCERS || items > BENCH_MAX_ITEMS) {
		pr_err("items=%u is invalid; use %u to %u\n", items,
		       BENCH_MAX_PRODUCERS, BENCH_MAX_ITEMS);
		return -EINVAL;
	}
	if (flush_runs < 1 || flush_runs > BENCH_MAX_SAMPLES ||
	    pending_flush_runs < 1 || pending_flush_runs > BENCH_MAX_SAMPLES ||
	    init_stop_runs < 1 || init_stop_runs > BENCH_MAX_SAMPLES) {
		pr_err("flush_runs, pending_flush_runs and init_stop_runs must be 1 to %u\n",
		       BENCH_MAX_SAMPLES);
		return -EINVAL;
	}
	return 0;
}

static void bench_print_results(void)
{
	unsigned int impl, metric, rep;

	for (impl = 0; impl < BENCH_IMPL_COUNT; impl++) {
		for (metric = 0; metric < BENCH_METRIC_COUNT; metric++) {
			for (rep = 0; rep < reps; rep++) {
				u64 value = bench_results[impl][metric][rep];

				if (value == U64_MAX)
					continue;
				pr_info("result impl=%s metric=%s rep=%u value=%llu\n",
					bench_impl_names[impl],
					bench_metric_names[metric], rep,
					value);
			}
		}
	}
}

/*
 * Runs every selected workload for every implementation, reps times. The
 * order of the implementations rotates by one each repetition, so that no
 * implementation always runs first after boot or after another one.
 */
static int bench_run(unsigned int mask)
{
	unsigned int buffer_len = max3(samples, flush_runs, init_stop_runs);
	unsigned int item_count = max(items, BENCH_PENDING_ITEMS + 1U);
	struct bench_item *item_array;
	u64 *buffer, *prerun_buffer;
	unsigned int rep, k;
	int ret = 0;

	buffer_len = max(buffer_len, pending_flush_runs);
	buffer = kvcalloc(buffer_len, sizeof(*buffer), GFP_KERNEL);
	prerun_buffer = kvcalloc(pending_flush_runs, sizeof(*prerun_buffer),
				 GFP_KERNEL);
	item_array = kvcalloc(item_count, sizeof(*item_array), GFP_KERNEL);
	if (!buffer || !prerun_buffer || !item_array) {
		ret = -ENOMEM;
		goto out;
	}

	for (rep = 0; rep < reps && !ret; rep++) {
		for (k = 0; k < BENCH_IMPL_COUNT && !ret; k++) {
			enum bench_impl impl = (rep + k) % BENCH_IMPL_COUNT;

			if (mask & (BENCH_WL_LATENCY | BENCH_WL_THROUGHPUT |
				    BENCH_WL_FLUSH))
				ret = bench_one_queue(impl, mask, item_array,
						      buffer, prerun_buffer,
						      rep);
			if (!ret && (mask & BENCH_WL_INIT_STOP))
				ret = bench_init_stop(impl, buffer, rep);
		}
		if (!ret && (mask & BENCH_WL_IDLE))
			ret = bench_idle(rep);
	}

out:
	kvfree(item_array);
	kvfree(prerun_buffer);
	kvfree(buffer);
	return ret;
}

struct bench_job {
	unsigned int mask;
	int result;
	struct completion done;
};

static int bench_main(void *data)
{
	struct bench_job *job = data;

	job->result = bench_run(job->mask);
	complete(&job->done);
	return 0;
}

static int __init bench_init(void)
{
	struct bench_job job;
	struct task_struct *task;
	unsigned int impl, metric, rep;
	ktime_t start;
	int ret;

	ret = bench_check_params();
	if (!ret)
		ret = bench_parse_workloads(workloads, &job.mask);
	if (ret)
		return ret;

	bench_results = kvmalloc(sizeof(*bench_results) * BENCH_IMPL_COUNT,
				 GFP_KERNEL);
	if (!bench_results)
		return -ENOMEM;
	for (impl = 0; impl < BENCH_IMPL_COUNT; impl++)
		for (metric = 0; metric < BENCH_METRIC_COUNT; metric++)
			for (rep = 0; rep < BENCH_MAX_REPS; rep++)
				bench_results[impl][metric][rep] = U64_MAX;

	pr_info("config cpus=%u workloads=%s reps=%u samples=%u gap_us=%u items=%u flush_runs=%u pending_flush_runs=%u init_stop_runs=%u idle_ms=%u\n",
		num_online_cpus(), workloads, reps, samples, gap_us, items,
		flush_runs, pending_flush_runs, init_stop_runs, idle_ms);

	/*
	 * The producer of every workload is a kthread, as the floor's
	 * "round trip between two kthreads" requires. insmod waits in
	 * TASK_IDLE, so a long run does not trip the hung-task detector.
	 */
	init_completion(&job.done);
	start = ktime_get();
	task = kthread_run(bench_main, &job, "nvq_bench");
	if (IS_ERR(task)) {
		ret = PTR_ERR(task);
		goto out;
	}
	wait_for_completion_state(&job.done, TASK_IDLE);
	ret = job.result;

	bench_print_results();
	if (ret)
		pr_err("FAILED: error %d after %lld ms\n", ret,
		       ktime_ms_delta(ktime_get(), start));
	else
		pr_info("done in %lld ms\n",
			ktime_ms_delta(ktime_get(), start));
out:
	kvfree(bench_results);
	bench_results = NULL;
	return ret;
}
module_init(bench_init);

static void __exit bench_exit(void)
{
}
module_exit(bench_exit);

MODULE_DESCRIPTION("Benchmark of nv_kthread_q against kthread_worker and workqueues");
MODULE_LICENSE("Dual MIT/GPL");
