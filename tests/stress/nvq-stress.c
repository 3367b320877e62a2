// SPDX-License-Identifier: MIT
/*
 * Stress test of nv_kthread_q through its exported API only. It tries to
 * make the queue lose, duplicate, reorder or corrupt items, and keeps
 * exact counts. Every item that schedule accepted (returned 1) must run
 * exactly once. Every 0 return must come from a pending item or a
 * stopping queue.
 *
 * test=all (default) runs five phases at load and fails the load with
 * -EINVAL if any fails:
 *
 *   producers    threads, timer_list timers and hard-mode hrtimers on
 *                every online CPU schedule pre-allocated items into
 *                STRESS_QUEUES queues for duration_ms. Each item has an
 *                atomic state (idle, queued, running), so a duplicate or
 *                unexpected run is seen, and a sequence number per
 *                producer and queue that checks FIFO order.
 *   rescheduling items that reschedule themselves, stopped again and
 *                again with "set the stop flag, then flush" while the
 *                producers keep going.
 *   flush race   threads flush while the producers schedule. After each
 *                flush, every item accepted before the call must have run.
 *   stop race    queues are stopped while producers on every CPU schedule
 *                into them, then set up again, stop_rounds times.
 *   cycles       init and stop, cycles times in all, every other time with
 *                items scheduled just before stop, behind one that sleeps.
 *
 * test=idle leaves queues idle for idle_ms and checks that their threads
 * neither ran nor woke. test=churn starts busy producers at load and
 * returns; unload stops everything, checks the counts and logs the result.
 *
 * The module never misuses the API on purpose: misuse warns, and the test
 * boots run with panic_on_warn=1.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/cpu.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/timer.h>

#include "nv-kthread-q.h"

#define STRESS_QUEUES 4
#define STRESS_POOL_ITEMS 128
#define STRESS_THREAD_BATCH 8
#define STRESS_TIMER_BATCH 8
#define STRESS_HRTIMER_BATCH 4
#define STRESS_HRTIMER_PERIOD_NS (250 * NSEC_PER_USEC)
#define STRESS_RESCHEDULERS_PER_QUEUE 2
#define STRESS_PENDING_ITEMS 32
#define STRESS_CYCLE_ITEMS 4
#define STRESS_IDLE_QUEUES 4
/* Failure messages logged, at most; the rest are only counted. */
#define STRESS_MAX_FAIL_MESSAGES 20

static char *test = "all";
module_param(test, charp, 0444);
MODULE_PARM_DESC(test, "Test to run: all (at load), idle (at load) or churn (from load to unload) (default: all)");

static unsigned int duration_ms = 2000;
module_param(duration_ms, uint, 0444);
MODULE_PARM_DESC(duration_ms, "Time the producers run in the producers, rescheduling and flush race phases, in ms (default: 2000)");

static unsigned int stop_rounds = 100;
module_param(stop_rounds, uint, 0444);
MODULE_PARM_DESC(stop_rounds, "Rounds of the stop race phase; each stops and restarts every queue (default: 100)");

static unsigned int cycles = 10000;
module_param(cycles, uint, 0444);
MODULE_PARM_DESC(cycles, "Init and stop cycles of the cycles phase, spread over one thread per online CPU (default: 10000)");

static unsigned int idle_ms = 5000;
module_param(idle_ms, uint, 0444);
MODULE_PARM_DESC(idle_ms, "Time test=idle leaves its queues idle, in ms (default: 5000)");

static atomic_t stress_failures = ATOMIC_INIT(0);
/* The failures of the rescheduling and flush race phases, also counted. */
static atomic_t stress_rescheduling_failures = ATOMIC_INIT(0);
static atomic_t stress_flush_failures = ATOMIC_INIT(0);

/* Counts a failure and logs the first STRESS_MAX_FAIL_MESSAGES of them. */
#define stress_fail(fmt, ...)						\
	do {								\
		if (atomic_inc_return(&stress_failures) <=		\
		    STRESS_MAX_FAIL_MESSAGES)				\
			pr_err("FAIL: " fmt, ##__VA_ARGS__);		\
	} while (0)

/* Counts a failure of one phase in @counter too. */
#define stress_fail_in(counter, fmt, ...)				\
	do {								\
		atomic_inc(counter);					\
		stress_fail(fmt, ##__VA_ARGS__);			\
	} while (0)

enum stress_item_state {
	STRESS_IDLE,
	STRESS_QUEUED,
	STRESS_RUNNING,
};

#define STRESS_ITEM_MAGIC 0x5eed1234u

struct stress_producer;

/* A pre-allocated item of one producer. */
struct stress_item {
	nv_kthread_q_item_t q_item;
	u32 magic;
	atomic_t state;			/* enum stress_item_state */
	struct stress_producer *producer;
	unsigned int index;		/* in the producer's pool */
	/* Written by the producer before schedule, read by the callback. */
	unsigned int queue_index;
	u64 seq;
	u32 cookie;
};

enum stress_producer_kind {
	STRESS_THREAD,
	STRESS_TIMER,
	STRESS_HRTIMER,
	STRESS_KINDS,
};

static const char * const stress_kind_names[STRESS_KINDS] = {
	"thread", "timer", "hrtimer",
};

struct stress_context;

struct stress_producer {
	struct stress_context *ctx;
	unsigned int id;
	enum stress_producer_kind kind;
	unsigned int cpu;
	bool stop;			/* the timer callbacks do not rearm */

	struct task_struct *thread;
	struct timer_list timer;
	struct hrtimer hrtimer;

	struct stress_item items[STRESS_POOL_ITEMS];
	unsigned int next_item;
	unsigned int next_queue;

	/* Producer side: only this producer's context writes them. */
	u64 next_seq[STRESS_QUEUES];
	u64 scheduled;
	u64 refused;
	u64 pool_empty;
	atomic64_t accepted[STRESS_QUEUES];

	/* Callback side: only the thread of queue i writes index i. */
	u64 expected_seq[STRESS_QUEUES];
	atomic64_t ran[STRESS_QUEUES];
};

/*
 * A queue with a gate that producers pass before each schedule. The stop
 * race phase closes the gate from inside the queue's thread, after stop
 * began and before the thread can end, then waits until no producer is
 * in the middle of a schedule. So no schedule ever reaches a queue whose
 * stop has returned, which is misuse and warns.
 */
struct stress_queue {
	nv_kthread_q_t q;
	unsigned int index;
	bool running;
	bool open;			/* smp_store_release/smp_load_acquire */
	atomic_t in_schedule;		/* producers between gate and return */
	/* Set only while a 0 return for an idle item is legitimate. */
	bool refusals_expected;
	u64 refused_stopping;
};

/* An item that reschedules itself until its owner sets its stop flag. */
struct stress_rescheduler {
	nv_kthread_q_item_t q_item;
	u32 magic;
	atomic_t state;			/* enum stress_item_state */
	struct stress_queue *sq;
	/* Sleeps between reading the stop flag and rescheduling. */
	bool slow;
	bool stop;
	atomic64_t scheduled;
	atomic64_t runs;
};

/*
 * An item that reschedules itself until its queue is stopping, then
 * closes the queue's gate. It keeps the thread alive (pending or running)
 * until the gate is closed and empty.
 */
struct stress_gate_keeper {
	nv_kthread_q_item_t q_item;
	u32 magic;
	atomic_t state;			/* enum stress_item_state */
	struct stress_queue *sq;
	bool closed_gate;
	u64 scheduled;
	u64 runs;
};

struct stress_context {
	struct stress_queue queues[STRESS_QUEUES];
	struct stress_producer **producers;
	unsigned int producer_count;
	struct stress_rescheduler reschedulers[STRESS_QUEUES]
					      [STRESS_RESCHEDULERS_PER_QUEUE];
	struct stress_gate_keeper gate_keepers[STRESS_QUEUES];
	unsigned long load_jiffies;

	/* Totals over all phases, for the verdict line. */
	u64 total_scheduled;
	u64 total_run;
	u64 total_refused;
	u64 total_cycles;
};

static struct stress_context *stress_churn_context;

static u32 stress_cookie(const struct stress_item *item)
{
	u64 value = ((u64)item->producer->id << 32) ^
		    ((u64)item->index << 16) ^ item->queue_index;

	return (u32)((value ^ item->seq) * 0x9e3779b97f4a7c15ull >> 32);
}

static unsigned long stress_ms_since(unsigned long start)
{
	return jiffies_to_msecs(jiffies - start);
}

/* Sleeps interruptibly, so that a waiting insmod is never in D state. */
static void stress_sleep_ms(unsigned int ms)
{
	unsigned long end = jiffies + msecs_to_jiffies(ms);

	while (time_before(jiffies, end))
		msleep_interruptible(jiffies_to_msecs(end - jiffies) ?: 1);
}

/* ---- Queues and gates ---- */

static int stress_queue_start(struct stress_queue *sq)
{
	char name[16];
	int ret;

	snprintf(name, sizeof(name), "nvq-stress/%u", sq->index);
	ret = nv_kthread_q_init(&sq->q, name);
	if (ret) {
		stress_fail("init of queue %u failed: %d\n", sq->index, ret);
		return ret;
	}
	sq->running = true;
	/* Pairs with smp_load_acquire() in stress_schedule_item(). */
	smp_store_release(&sq->open, true);
	return 0;
}

static void stress_queue_stop(struct stress_queue *sq)
{
	if (!sq->running)
		return;
	nv_kthread_q_stop(&sq->q);
	sq->running = false;
	WRITE_ONCE(sq->open, false);
}

/*
 * Closes the gate, then waits until every producer that passed it has
 * returned from schedule. A producer increments in_schedule before it
 * reads the gate, and the full barriers on both sides mean that either
 * this function reads its count or the producer reads the gate closed.
 */
static void stress_close_gate(struct stress_queue *sq)
{
	WRITE_ONCE(sq->open, false);
	/* Orders the gate write before the count read; see the producer. */
	smp_mb();
	while (atomic_read(&sq->in_schedule))
		usleep_range(10, 50);
}

/* ---- Producer items ---- */

static void stress_item_run(void *args)
{
	struct stress_item *item = args;
	struct stress_producer *producer;
	unsigned int queue_index;
	int old;

	if (item->magic != STRESS_ITEM_MAGIC) {
		stress_fail("callback got a corrupt item %p (magic %#x)\n",
			    item, item->magic);
		return;
	}

	old = atomic_cmpxchg(&item->state, STRESS_QUEUED, STRESS_RUNNING);
	if (old != STRESS_QUEUED) {
		stress_fail("item %u of producer %u ran in state %d, not queued: a duplicate or unexpected run\n",
			    item->index, item->producer->id, old);
		return;
	}

	producer = item->producer;
	queue_index = item->queue_index;
	if (queue_index >= STRESS_QUEUES) {
		stress_fail("item %u of producer %u has queue index %u\n",
			    item->index, producer->id, queue_index);
		return;
	}
	if (item->cookie != stress_cookie(item))
		stress_fail("item %u of producer %u is corrupt (cookie %#x)\n",
			    item->index, producer->id, item->cookie);
	if (item->seq != producer->expected_seq[queue_index])
		stress_fail("producer %u, queue %u: item with sequence number %llu ran, expected %llu\n",
			    producer->id, queue_index, item->seq,
			    producer->expected_seq[queue_index]);
	producer->expected_seq[queue_index] = item->seq + 1;
	atomic64_inc(&producer->ran[queue_index]);

	/* The producer may reuse the item from here on. */
	atomic_set_release(&item->state, STRESS_IDLE);
}

static struct stress_item *stress_find_idle_item(struct stress_producer *p)
{
	unsigned int i, index;

	for (i = 0; i < STRESS_POOL_ITEMS; i++) {
		index = (p->next_item + i) % STRESS_POOL_ITEMS;
		if (atomic_read_acquire(&p->items[index].state) ==
		    STRESS_IDLE) {
			p->next_item = index + 1;
			return &p->items[index];
		}
	}
	p->pool_empty++;
	return NULL;
}

/*
 * Schedules one idle item of @p on queue @sq, unless the gate is closed.
 * Returns false when the pool had no idle item.
 */
static bool stress_schedule_item(struct stress_producer *p,
				 struct stress_queue *sq)
{
	struct stress_item *item;
	bool stopping_before, stopping;
	int ret;

	item = stress_find_idle_item(p);
	if (!item)
		return false;

	atomic_inc(&sq->in_schedule);
	/*
	 * Count this producer in before reading the gate, so that
	 * stress_close_gate() either reads the count or this reads the gate
	 * closed.
	 */
	smp_mb__after_atomic();
	/* Pairs with the release in stress_queue_start(). */
	if (!smp_load_acquire(&sq->open))
		goto out;

	/* Only the owner moves an item out of the idle state. */
	if (atomic_cmpxchg(&item->state, STRESS_IDLE, STRESS_QUEUED) !=
	    STRESS_IDLE) {
		stress_fail("idle item %u of producer %u changed state\n",
			    item->index, p->id);
		goto out;
	}
	item->queue_index = sq->index;
	item->seq = p->next_seq[sq->index];
	item->cookie = stress_cookie(item);

	p->scheduled++;
	stopping_before = atomic_read(&sq->q.main_loop_should_exit);
	ret = nv_kthread_q_schedule_q_item(&sq->q, &item->q_item);
	if (ret == 1) {
		/* Once stop set the exit flag, schedule must return 0. */
		if (stopping_before)
			stress_fail("queue %u accepted item %u of producer %u after stop began\n",
				    sq->index, item->index, p->id);
		p->next_seq[sq->index]++;
		atomic64_inc(&p->accepted[sq->index]);
		goto out;
	}

	/* The item was idle, so a 0 return is only legitimate during stop. */
	stopping = atomic_read(&sq->q.main_loop_should_exit);
	p->refused++;
	if (atomic_cmpxchg(&item->state, STRESS_QUEUED, STRESS_IDLE) !=
	    STRESS_QUEUED)
		stress_fail("queue %u returned %d for item %u of producer %u, but the item ran\n",
			    sq->index, ret, item->index, p->id);
	if (ret != 0)
		stress_fail("schedule on queue %u returned %d\n",
			    sq->index, ret);
	else if (!stopping || !READ_ONCE(sq->refusals_expected))
		stress_fail("queue %u returned 0 for idle item %u of producer %u while %s\n",
			    sq->index, item->index, p->id,
			    stopping ? "stopping outside the stop race" :
				       "running");
out:
	/* The schedule call completes before the gate closer reads 0. */
	smp_mb__before_atomic();
	atomic_dec(&sq->in_schedule);
	return true;
}

/* Schedules up to @count items, one queue after the other. */
static bool stress_produce(struct stress_producer *p, unsigned int count)
{
	struct stress_context *ctx = p->ctx;
	struct stress_queue *sq;
	unsigned int i;

	for (i = 0; i < count; i++) {
		sq = &ctx->queues[p->next_queue];
		p->next_queue = (p->next_queue + 1) % STRESS_QUEUES;
		if (!stress_schedule_item(p, sq))
			return false;
	}
	return true;
}

/* ---- Producers ---- */


static int stress_producer_thread(void *data)
{
	struct stress_producer *p = data;

	while (!kthread_should_stop()) {
		if (stress_produce(p, STRESS_THREAD_BATCH))
			cond_resched();
		else
			usleep_range(50, 100);
	}
	return 0;
}

static void stress_producer_timer(struct timer_list *timer)
{
	struct stress_producer *p = from_timer(p, timer, timer);

	stress_produce(p, STRESS_TIMER_BATCH);
	if (!READ_ONCE(p->stop))
		mod_timer(&p->timer, jiffies + 1);
}

static enum hrtimer_restart stress_producer_hrtimer(struct hrtimer *timer)
{
	struct stress_producer *p = container_of(timer, struct stress_producer,
						 hrtimer);

	stress_produce(p, STRESS_HRTIMER_BATCH);
	if (READ_ONCE(p->stop))
		return HRTIMER_NORESTART;
	hrtimer_forward_now(timer, ns_to_ktime(STRESS_HRTIMER_PERIOD_NS));
	return HRTIMER_RESTART;
}

/* Runs on the producer's CPU, so that the pinned hrtimer stays there. */
static void stress_start_hrtimer_here(void *info)
{
	struct stress_producer *p = info;

	hrtimer_start(&p->hrtimer, ns_to_ktime(STRESS_HRTIMER_PERIOD_NS),
		      HRTIMER_MODE_REL_PINNED_HARD);
}

static void stress_init_hrtimer(struct hrtimer *timer,
				enum hrtimer_restart (*function)(struct hrtimer *))
{
#ifdef NVQ_HAVE_HRTIMER_SETUP
	hrtimer_setup(timer, function, CLOCK_MONOTONIC,
		      HRTIMER_MODE_REL_PINNED_HARD);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_PINNED_HARD);
	timer->function = function;
#endif
}

static int stress_producers_start(struct stress_context *ctx)
{
	struct stress_producer *p;
	unsigned int i;

	for (i = 0; i < ctx->producer_count; i++) {
		p = ctx->producers[i];
		WRITE_ONCE(p->stop, false);

		switch (p->kind) {
		case STRESS_THREAD:
			p->thread = kthread_create_on_cpu(stress_producer_thread,
							  p, p->cpu,
							  "nvq-prod/%u");
			if (IS_ERR(p->thread)) {
				stress_fail("creating producer thread on CPU %u failed: %ld\n",
					    p->cpu, PTR_ERR(p->thread));
				p->thread = NULL;
				return -ENOMEM;
			}
			wake_up_process(p->thread);
			break;
		case STRESS_TIMER:
			p->timer.expires = jiffies + 1;
			add_timer_on(&p->timer, p->cpu);
			break;
		default:
			smp_call_function_single(p->cpu,
						 stress_start_hrtimer_here, p,
						 1);
			break;
		}
	}
	return 0;
}

/* Stops every producer. Safe on producers that were never started. */
static void stress_producers_stop(struct stress_context *ctx)
{
	struct stress_producer *p;
	unsigned int i;

	for (i = 0; i < ctx->producer_count; i++)
		WRITE_ONCE(ctx->producers[i]->stop, true);

	for (i = 0; i < ctx->producer_count; i++) {
		p = ctx->producers[i];
		switch (p->kind) {
		case STRESS_THREAD:
			if (p->thread)
				kthread_stop(p->thread);
			p->thread = NULL;
			break;
		case STRESS_TIMER:
			timer_delete_sync(&p->timer);
			break;
		default:
			hrtimer_cancel(&p->hrtimer);
			break;
		}
	}
}

static struct stress_producer *stress_producer_alloc(struct stress_context *ctx,
						     unsigned int id,
						     enum stress_producer_kind kind,
						     unsigned int cpu)
{
	struct stress_producer *p;
	struct stress_item *item;
	unsigned int i;

	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return NULL;

	p->ctx = ctx;
	p->id = id;
	p->kind = kind;
	p->cpu = cpu;
	p->stop = true;
	timer_setup(&p->timer, stress_producer_timer, TIMER_PINNED);
	stress_init_hrtimer(&p->hrtimer, stress_producer_hrtimer);
	for (i = 0; i < STRESS_POOL_ITEMS; i++) {
		item = &p->items[i];
		nv_kthread_q_item_init(&item->q_item, stress_item_run, item);
		item->magic = STRESS_ITEM_MAGIC;
		atomic_set(&item->state, STRESS_IDLE);
		item->producer = p;
		item->index = i;
	}
	return p;
}

/* Allocates one producer of each kind for every online CPU. */
static int stress_producers_alloc(struct stress_context *ctx)
{
	unsigned int cpu, kind, count = 0;

	ctx->producers = kcalloc(num_online_cpus() * STRESS_KINDS,
				 sizeof(*ctx->producers), GFP_KERNEL);
	if (!ctx->producers)
		return -ENOMEM;

	for_each_online_cpu(cpu) {
		for (kind = 0; kind < STRESS_KINDS; kind++) {
			if (count == num_online_cpus() * STRESS_KINDS)
				break;
			ctx->producers[count] = stress_producer_alloc(ctx, count,
								      kind, cpu);
			if (!ctx->producers[count])
				return -ENOMEM;
			ctx->producer_count = ++count;
		}
	}
	return 0;
}

static void stress_producers_free(struct stress_context *ctx)
{
	unsigned int i;

	for (i = 0; i < ctx->producer_count; i++)
		kfree(ctx->producers[i]);
	kfree(ctx->producers);
	ctx->producers = NULL;
	ctx->producer_count = 0;
}

/* ---- Accounting ---- */

struct stress_counts {
	u64 scheduled;
	u64 accepted;
	u64 ran;
	u64 refused;
	u64 pool_empty;
};

static void stress_sum_counts(const struct stress_context *ctx,
			      struct stress_counts *counts)
{
	const struct stress_producer *p;
	unsigned int i, q;

	memset(counts, 0, sizeof(*counts));
	for (i = 0; i < ctx->producer_count; i++) {
		p = ctx->producers[i];
		counts->scheduled += p->scheduled;
		counts->refused += p->refused;
		counts->pool_empty += p->pool_empty;
		for (q = 0; q < STRESS_QUEUES; q++) {
			counts->accepted += atomic64_read(&p->accepted[q]);
			counts->ran += atomic64_read(&p->ran[q]);
		}
	}
}

static void stress_counts_since(struct stress_counts *now,
				const struct stress_counts *before)
{
	now->scheduled -= before->scheduled;
	now->accepted -= before->accepted;
	now->ran -= before->ran;
	now->refused -= before->refused;
	now->pool_empty -= before->pool_empty;
}

/*
 * Checks, with every producer stopped or shut out by closed gates and the
 * queues flushed or stopped, that each accepted item ran exactly once, in
 * order, and that no item is still pending.
 */
static void stress_check_items(const struct stress_context *ctx,
			       const char *phase)
{
	const struct stress_producer *p;
	const struct stress_item *item;
	unsigned int i, q, n;
	s64 accepted, ran;

	for (i = 0; i < ctx->producer_count; i++) {
		p = ctx->producers[i];
		for (q = 0; q < STRESS_QUEUES; q++) {
			accepted = atomic64_read(&p->accepted[q]);
			ran = atomic64_read(&p->ran[q]);
			if (accepted != ran)
				stress_fail("%s: producer %u (%s, CPU %u), queue %u: %lld items accepted, %lld run\n",
					    phase, p->id,
					    stress_kind_names[p->kind], p->cpu,
					    q, accepted, ran);
			if (p->expected_seq[q] != p->next_seq[q])
				stress_fail("%s: producer %u, queue %u: last sequence number run %llu, accepted %llu\n",
					    phase, p->id, q, p->expected_seq[q],
					    p->next_seq[q]);
		}
		for (n = 0; n < STRESS_POOL_ITEMS; n++) {
			item = &p->items[n];
			if (atomic_read(&item->state) != STRESS_IDLE)
				stress_fail("%s: item %u of producer %u is in state %d after its queue drained\n",
					    phase, n, p->id,
					    atomic_read(&item->state));
			if (!list_empty(&item->q_item.q_list_node))
				stress_fail("%s: item %u of producer %u is still linked on a queue\n",
					    phase, n, p->id);
		}
	}
}

/* Logs a phase's pass or FAIL line. Returns true if the phase passed. */
static bool stress_report_phase(const char *phase, int failures,
				const char *figures)
{
	if (failures) {
		pr_err("%s: FAIL: %d failures; %s\n", phase, failures, figures);
		return false;
	}
	pr_info("%s: passed: %s\n", phase, figures);
	return true;
}

/* ---- Scheduling an item that is pending ---- */

struct stress_blocker {
	nv_kthread_q_item_t q_item;
	struct completion started;
	struct completion release;
};

struct stress_counted_item {
	nv_kthread_q_item_t q_item;
	atomic_t runs;
};

static void stress_blocker_run(void *args)
{
	struct stress_blocker *blocker = args;

	complete(&blocker->started);
	if (!wait_for_completion_timeout(&blocker->release, 30 * HZ))
		stress_fail("blocker item was not released within 30 s\n");
}

static void stress_counted_item_run(void *args)
{
	struct stress_counted_item *item = args;

	atomic_inc(&item->runs);
}

/* Sleeps first, so that the items queued behind it are pending at stop. */
static void stress_counted_sleeping_item_run(void *args)
{
	usleep_range(50, 100);
	stress_counted_item_run(args);
}

/*
 * Holds the thread of @sq in a callback, schedules STRESS_PENDING_ITEMS
 * items twice each, and checks that the second schedule of each returned 0
 * and that each item ran once. Adds the schedule calls and refusals to
 * @counts.
 */
static void stress_schedule_pending(struct stress_queue *sq,
				    struct stress_counts *counts)
{
	struct stress_counted_item *items;
	struct stress_blocker blocker;
	unsigned int i;
	int ret;

	items = kcalloc(STRESS_PENDING_ITEMS, sizeof(*items), GFP_KERNEL);
	if (!items) {
		stress_fail("pending items: out of memory\n");
		return;
	}
	for (i = 0; i < STRESS_PENDING_ITEMS; i++)
		nv_kthread_q_item_init(&items[i].q_item,
				       stress_counted_item_run, &items[i]);

	init_completion(&blocker.started);
	init_completion(&blocker.release);
	nv_kthread_q_item_init(&blocker.q_item, stress_blocker_run, &blocker);
	if (nv_kthread_q_schedule_q_item(&sq->q, &blocker.q_item) != 1) {
		stress_fail("pending items: schedule of the blocker returned 0\n");
		goto out;
	}
	wait_for_completion(&blocker.started);

	for (i = 0; i < STRESS_PENDING_ITEMS; i++) {
		ret = nv_kthread_q_schedule_q_item(&sq->q, &items[i].q_item);
		if (ret != 1)
			stress_fail("pending items: first schedule of item %u returned %d\n",
				    i, ret);
		ret = nv_kthread_q_schedule_q_item(&sq->q, &items[i].q_item);
		if (ret != 0)
			stress_fail("pending items: schedule of pending item %u returned %d\n",
				    i, ret);
		counts->scheduled += 2;
		counts->accepted++;
		counts->refused++;
	}

	complete(&blocker.release);
	nv_kthread_q_flush(&sq->q);
	counts->ran++;
	for (i = 0; i < STRESS_PENDING_ITEMS; i++) {
		if (atomic_read(&items[i].runs) != 1)
			stress_fail("pending items: item %u ran %d times, expected once\n",
				    i, atomic_read(&items[i].runs));
		counts->ran += atomic_read(&items[i].runs);
	}
	counts->scheduled++;
	counts->accepted++;
out:
	kfree(items);
}

/* ---- Items that reschedule themselves ---- */

#define STRESS_RESCHEDULER_MAGIC 0x7e5c4ed0u

static void stress_rescheduler_run(void *args)
{
	struct stress_rescheduler *r = args;
	int old;

	if (r->magic != STRESS_RESCHEDULER_MAGIC) {
		stress_fail_in(&stress_rescheduling_failures,
				       "callback got a corrupt rescheduling item %p\n", r);
		return;
	}
	old = atomic_cmpxchg(&r->state, STRESS_QUEUED, STRESS_RUNNING);
	if (old != STRESS_QUEUED) {
		stress_fail_in(&stress_rescheduling_failures,
				       "rescheduling item of queue %u ran in state %d\n",
			    r->sq->index, old);
		return;
	}
	atomic64_inc(&r->runs);

	if (READ_ONCE(r->stop)) {
		atomic_set(&r->state, STRESS_IDLE);
		return;
	}
	/*
	 * Work done after the flag was read widens the window in which the
	 * owner sets the flag and flushes while this run, which missed the
	 * flag, has yet to reschedule. Only a flush that waits for that
	 * last run as well finds the item idle afterwards.
	 */
	if (r->slow)
		usleep_range(20, 50);
	atomic_set(&r->state, STRESS_QUEUED);
	atomic64_inc(&r->scheduled);
	if (nv_kthread_q_schedule_q_item(&r->sq->q, &r->q_item) != 1) {
		atomic_set(&r->state, STRESS_IDLE);
		stress_fail_in(&stress_rescheduling_failures,
				       "rescheduling item of queue %u could not reschedule itself\n",
			    r->sq->index);
	}
}

static void stress_reschedulers_init(struct stress_context *ctx)
{
	struct stress_rescheduler *r;
	unsigned int q, i;

	for (q = 0; q < STRESS_QUEUES; q++) {
		for (i = 0; i < STRESS_RESCHEDULERS_PER_QUEUE; i++) {
			r = &ctx->reschedulers[q][i];
			nv_kthread_q_item_init(&r->q_item,
					       stress_rescheduler_run, r);
			r->magic = STRESS_RESCHEDULER_MAGIC;
			atomic_set(&r->state, STRESS_IDLE);
			r->sq = &ctx->queues[q];
			r->slow = i == 0;
			r->stop = true;
		}
	}
}

static void stress_reschedulers_start(struct stress_context *ctx)
{
	struct stress_rescheduler *r;
	unsigned int q, i;

	for (q = 0; q < STRESS_QUEUES; q++) {
		for (i = 0; i < STRESS_RESCHEDULERS_PER_QUEUE; i++) {
			r = &ctx->reschedulers[q][i];
			WRITE_ONCE(r->stop, false);
			atomic_set(&r->state, STRESS_QUEUED);
			atomic64_inc(&r->scheduled);
			if (nv_kthread_q_schedule_q_item(&r->sq->q,
							 &r->q_item) != 1) {
				atomic_set(&r->state, STRESS_IDLE);
				stress_fail_in(&stress_rescheduling_failures,
				       "first schedule of rescheduling item %u of queue %u returned 0\n",
					    i, q);
			}
		}
	}
}

/*
 * Stops every rescheduling item the way a driver does: set its stop flag,
 * then flush its queue. After the flush the item must be idle and
 * unlinked, and it must not run again, which a second flush shows.
 */
static void stress_reschedulers_stop(struct stress_context *ctx)
{
	s64 runs[STRESS_QUEUES][STRESS_RESCHEDULERS_PER_QUEUE];
	struct stress_rescheduler *r;
	unsigned int q, i;

	for (q = 0; q < STRESS_QUEUES; q++) {
		for (i = 0; i < STRESS_RESCHEDULERS_PER_QUEUE; i++)
			WRITE_ONCE(ctx->reschedulers[q][i].stop, true);
		nv_kthread_q_flush(&ctx->queues[q].q);

		for (i = 0; i < STRESS_RESCHEDULERS_PER_QUEUE; i++) {
			r = &ctx->reschedulers[q][i];
			runs[q][i] = atomic64_read(&r->runs);
			if (atomic_read(&r->state) != STRESS_IDLE)
				stress_fail_in(&stress_rescheduling_failures,
				       "rescheduling item %u of queue %u is in state %d after flag and flush\n",
					    i, q, atomic_read(&r->state));
			if (!list_empty(&r->q_item.q_list_node))
				stress_fail_in(&stress_rescheduling_failures,
				       "rescheduling item %u of queue %u is pending after flag and flush\n",
					    i, q);
		}
	}

	for (q = 0; q < STRESS_QUEUES; q++) {
		nv_kthread_q_flush(&ctx->queues[q].q);
		for (i = 0; i < STRESS_RESCHEDULERS_PER_QUEUE; i++) {
			r = &ctx->reschedulers[q][i];
			if (atomic64_read(&r->runs) != runs[q][i])
				stress_fail_in(&stress_rescheduling_failures,
				       "rescheduling item %u of queue %u ran %lld more times after flag and flush\n",
					    i, q, atomic64_read(&r->runs) - runs[q][i]);
		}
	}
}

static void stress_rescheduler_counts(const struct stress_context *ctx,
				      u64 *scheduled, u64 *runs)
{
	const struct stress_rescheduler *r;
	unsigned int q, i;

	*scheduled = 0;
	*runs = 0;
	for (q = 0; q < STRESS_QUEUES; q++) {
		for (i = 0; i < STRESS_RESCHEDULERS_PER_QUEUE; i++) {
			r = &ctx->reschedulers[q][i];
			*scheduled += atomic64_read(&r->scheduled);
			*runs += atomic64_read(&r->runs);
		}
	}
}

/* ---- Flushes racing schedules ---- */

struct stress_flusher {
	struct stress_context *ctx;
	struct task_struct *thread;
	unsigned int first_queue;
	s64 *snapshot;			/* accepted count per producer */
	u64 flushes;
	u64 checks;			/* accepted-versus-run comparisons */
};

/*
 * Flushes the queues in turn. Before each flush it reads how many items
 * each producer got accepted on the queue, and after it checks that at
 * least that many ran.
 */
static int stress_flusher_thread(void *data)
{
	struct stress_flusher *f = data;
	struct stress_context *ctx = f->ctx;
	unsigned int q = f->first_queue, i;
	s64 ran;

	while (!kthread_should_stop()) {
		for (i = 0; i < ctx->producer_count; i++)
			f->snapshot[i] =
				atomic64_read(&ctx->producers[i]->accepted[q]);

		nv_kthread_q_flush(&ctx->queues[q].q);
		f->flushes++;

		for (i = 0; i < ctx->producer_count; i++) {
			ran = atomic64_read(&ctx->producers[i]->ran[q]);
			if (ran < f->snapshot[i])
				stress_fail_in(&stress_flush_failures,
				       "flush of queue %u returned before producer %u's items ran: %lld accepted before the flush, %lld run\n",
					    q, i, f->snapshot[i], ran);
			f->checks++;
		}
		q = (q + 1) % STRESS_QUEUES;
		usleep_range(100, 200);
	}
	return 0;
}

static struct stress_flusher *stress_flushers_start(struct stress_context *ctx,
						    unsigned int count)
{
	struct stress_flusher *flushers;
	unsigned int i;

	flushers = kcalloc(count, sizeof(*flushers), GFP_KERNEL);
	if (!flushers)
		return NULL;

	for (i = 0; i < count; i++) {
		flushers[i].ctx = ctx;
		flushers[i].first_queue = i % STRESS_QUEUES;
		flushers[i].snapshot = kcalloc(ctx->producer_count,
					       sizeof(s64), GFP_KERNEL);
		if (!flushers[i].snapshot)
			break;
		flushers[i].thread = kthread_run(stress_flusher_thread,
						 &flushers[i], "nvq-flush/%u",
						 i);
		if (IS_ERR(flushers[i].thread)) {
			flushers[i].thread = NULL;
			break;
		}
	}
	if (i < count)
		stress_fail("starting flusher thread %u failed\n", i);
	return flushers;
}

/* Stops the flusher threads and adds up their flushes and checks. */
static void stress_flushers_stop(struct stress_flusher *flushers,
				 unsigned int count, u64 *flushes, u64 *checks)
{
	unsigned int i;

	*flushes = 0;
	*checks = 0;
	for (i = 0; i < count; i++) {
		if (flushers[i].thread)
			kthread_stop(flushers[i].thread);
		*flushes += flushers[i].flushes;
		*checks += flushers[i].checks;
		kfree(flushers[i].snapshot);
	}
	kfree(flushers);
}

/* ---- Phases 1 to 3: producers, rescheduling items, flush race ---- */

static int stress_queues_start(struct stress_context *ctx)
{
	unsigned int q;
	int ret;

	for (q = 0; q < STRESS_QUEUES; q++) {
		ctx->queues[q].index = q;
		ret = stress_queue_start(&ctx->queues[q]);
		if (ret)
			return ret;
	}
	return 0;
}

static void stress_queues_stop(struct stress_context *ctx)
{
	unsigned int q;

	for (q = 0; q < STRESS_QUEUES; q++)
		stress_queue_stop(&ctx->queues[q]);
}

static void stress_queues_flush(struct stress_context *ctx)
{
	unsigned int q;

	for (q = 0; q < STRESS_QUEUES; q++)
		nv_kthread_q_flush(&ctx->queues[q].q);
}

/*
 * Runs the producers for duration_ms. Meanwhile flusher threads check
 * flushes against the producers' counts, and this thread starts and stops
 * the rescheduling items again and again. Reports three phases.
 */
static int stress_run_producers(struct stress_context *ctx)
{
	int failures_before, rescheduling_failures, flush_failures;
	int producer_failures;
	struct stress_counts pending = {}, counts;
	unsigned int flusher_count = num_online_cpus();
	u64 rescheduler_stops = 0, flushes, checks;
	u64 rescheduler_scheduled, rescheduler_runs;
	struct stress_flusher *flushers;
	unsigned long start, deadline;
	char figures[256];
	int passed = 0;

	failures_before = atomic_read(&stress_failures);
	start = jiffies;
	stress_schedule_pending(&ctx->queues[0], &pending);

	if (stress_producers_start(ctx)) {
		stress_producers_stop(ctx);
		return 0;
	}

	atomic_set(&stress_rescheduling_failures, 0);
	atomic_set(&stress_flush_failures, 0);
	flushers = stress_flushers_start(ctx, flusher_count);
	if (!flushers)
		stress_fail("flush race: out of memory\n");

	deadline = jiffies + msecs_to_jiffies(duration_ms);
	while (time_before(jiffies, deadline)) {
		stress_reschedulers_start(ctx);
		stress_sleep_ms(1 + rescheduler_stops % 5);
		stress_reschedulers_stop(ctx);
		rescheduler_stops++;
	}

	stress_producers_stop(ctx);
	flushes = 0;
	checks = 0;
	if (flushers)
		stress_flushers_stop(flushers, flusher_count, &flushes,
				     &checks);
	stress_queues_flush(ctx);
	stress_check_items(ctx, "producers");

	rescheduling_failures = atomic_read(&stress_rescheduling_failures);
	flush_failures = atomic_read(&stress_flush_failures);
	producer_failures = atomic_read(&stress_failures) - failures_before -
			    rescheduling_failures - flush_failures;

	stress_sum_counts(ctx, &counts);
	stress_rescheduler_counts(ctx, &rescheduler_scheduled,
				  &rescheduler_runs);
	snprintf(figures, sizeof(figures),
		 "%u producers on %u CPUs, %u queues, %llu scheduled, %llu accepted, %llu run, %llu refused, %llu times no idle item; %llu pending items scheduled again and refused; in %lu ms",
		 ctx->producer_count, num_online_cpus(), STRESS_QUEUES,
		 counts.scheduled, counts.accepted, counts.ran, counts.refused,
		 counts.pool_empty, pending.refused, stress_ms_since(start));
	passed += stress_report_phase("producers", producer_failures,
				      figures);

	snprintf(figures, sizeof(figures),
		 "%u items stopped with flag and flush %llu times each, %llu runs",
		 STRESS_QUEUES * STRESS_RESCHEDULERS_PER_QUEUE,
		 rescheduler_stops, rescheduler_runs);
	passed += stress_report_phase("rescheduling", rescheduling_failures,
				      figures);

	snprintf(figures, sizeof(figures),
		 "%u threads, %llu flushes, %llu accepted-before-flush counts checked",
		 flusher_count, flushes, checks);
	passed += stress_report_phase("flush race", flush_failures, figures);

	ctx->total_scheduled += counts.scheduled + pending.scheduled +
				rescheduler_scheduled;
	ctx->total_run += counts.ran + pending.ran + rescheduler_runs;
	ctx->total_refused += counts.refused + pending.refused;
	return passed;
}

/* ---- Phase 4: stop racing schedule ---- */

#define STRESS_GATE_KEEPER_MAGIC 0x6a7e4ee9u

/*
 * Reads main_loop_should_exit, which drivers are known to read directly,
 * to see that stop has begun. Until then it keeps itself pending or
 * running, so that the queue's thread cannot end before it closed the
 * gate.
 */
static void stress_gate_keeper_run(void *args)
{
	struct stress_gate_keeper *g = args;
	struct stress_queue *sq = g->sq;
	int old;

	if (g->magic != STRESS_GATE_KEEPER_MAGIC) {
		stress_fail("callback got a corrupt gate keeper %p\n", g);
		return;
	}
	old = atomic_cmpxchg(&g->state, STRESS_QUEUED, STRESS_RUNNING);
	if (old != STRESS_QUEUED) {
		stress_fail("gate keeper of queue %u ran in state %d\n",
			    sq->index, old);
		return;
	}
	g->runs++;

	if (!atomic_read(&sq->q.main_loop_should_exit)) {
		/*
		 * Sleep instead of spinning through the queue, which left
		 * less CPU time for the producers' items and for stop.
		 */
		usleep_range(10, 20);
		atomic_set(&g->state, STRESS_QUEUED);
		g->scheduled++;
		if (nv_kthread_q_schedule_q_item(&sq->q, &g->q_item) == 1)
			return;
		/* Refused because stop set the exit flag meanwhile. */
		sq->refused_stopping++;
		if (!atomic_read(&sq->q.main_loop_should_exit))
			stress_fail("queue %u refused its gate keeper while running\n",
				    sq->index);
	}

	stress_close_gate(sq);
	g->closed_gate = true;
	atomic_set(&g->state, STRESS_IDLE);
}

/*
 * Stops each queue while producers on every CPU schedule into it, checks
 * that nothing was lost or left linked, sets the queues up again, and
 * repeats stop_rounds times.
 */
static int stress_run_stop_race(struct stress_context *ctx)
{
	struct stress_counts before, counts;
	struct stress_gate_keeper *g;
	struct stress_queue *sq;
	unsigned int round, q, rounds = 0;
	u64 gate_keeper_runs = 0, gate_keeper_refused = 0;
	u64 gate_keeper_scheduled = 0;
	int failures = atomic_read(&stress_failures);
	unsigned long start = jiffies;
	char figures[256];

	stress_sum_counts(ctx, &before);
	for (q = 0; q < STRESS_QUEUES; q++) {
		sq = &ctx->queues[q];
		WRITE_ONCE(sq->refusals_expected, true);
		sq->refused_stopping = 0;
		g = &ctx->gate_keepers[q];
		nv_kthread_q_item_init(&g->q_item, stress_gate_keeper_run, g);
		g->magic = STRESS_GATE_KEEPER_MAGIC;
		atomic_set(&g->state, STRESS_IDLE);
		g->sq = sq;
	}

	if (stress_producers_start(ctx))
		goto out;

	for (round = 0; round < stop_rounds; round++) {
		for (q = 0; q < STRESS_QUEUES; q++) {
			sq = &ctx->queues[q];
			g = &ctx->gate_keepers[q];
			g->closed_gate = false;
			atomic_set(&g->state, STRESS_QUEUED);
			g->scheduled++;
			if (nv_kthread_q_schedule_q_item(&sq->q,
							 &g->q_item) != 1) {
				atomic_set(&g->state, STRESS_IDLE);
				stress_fail("stop race: schedule of the gate keeper of queue %u returned 0\n",
					    q);
				stress_close_gate(sq);
			}
			/* Let items pile up; vary how many. */
			usleep_range(50 + 100 * (round % 4), 100 + 100 * (round % 4));

			stress_queue_stop(sq);

			if (!g->closed_gate)
				stress_fail("stop race: queue %u stopped without its gate keeper seeing the exit flag\n",
					    q);
			if (atomic_read(&g->state) != STRESS_IDLE ||
			    !list_empty(&g->q_item.q_list_node))
				stress_fail("stop race: gate keeper of queue %u still pending after stop\n",
					    q);
		}

		/* Every gate is closed, so no producer schedules now. */
		stress_check_items(ctx, "stop race");
		rounds++;
		if (atomic_read(&stress_failures) != failures)
			break;
		if (stress_queues_start(ctx))
			break;
	}

out:
	stress_producers_stop(ctx);
	for (q = 0; q < STRESS_QUEUES; q++) {
		sq = &ctx->queues[q];
		if (sq->running)
			nv_kthread_q_flush(&sq->q);
		WRITE_ONCE(sq->refusals_expected, false);
		gate_keeper_scheduled += ctx->gate_keepers[q].scheduled;
		gate_keeper_runs += ctx->gate_keepers[q].runs;
		gate_keeper_refused += sq->refused_stopping;
	}
	stress_check_items(ctx, "stop race");

	stress_sum_counts(ctx, &counts);
	stress_counts_since(&counts, &before);
	snprintf(figures, sizeof(figures),
		 "%u rounds of %u queue stops, %llu scheduled, %llu accepted, %llu run, %llu refused while stopping; gate keepers ran %llu times, refused %llu; in %lu ms",
		 rounds, STRESS_QUEUES, counts.scheduled, counts.accepted,
		 counts.ran, counts.refused, gate_keeper_runs,
		 gate_keeper_refused, stress_ms_since(start));
	ctx->total_scheduled += counts.scheduled + gate_keeper_scheduled;
	ctx->total_run += counts.ran + gate_keeper_runs;
	ctx->total_refused += counts.refused + gate_keeper_refused;
	if (rounds != stop_rounds)
		stress_fail("stop race: %u of %u rounds ran\n", rounds,
			    stop_rounds);
	return stress_report_phase("stop race",
				   atomic_read(&stress_failures) - failures,
				   figures);
}

/* ---- Phase 5: init and stop cycles ---- */

struct stress_cycle_worker {
	nv_kthread_q_t q;
	struct task_struct *thread;
	unsigned int id;
	unsigned int cycles;
	unsigned int cycles_done;
	unsigned int cycles_with_items;
	bool finished;
	u64 scheduled;
	struct stress_counted_item items[STRESS_CYCLE_ITEMS];
};

/* Sleeps until kthread_stop(), so that the caller may reap the thread. */
static void stress_wait_for_stop(void)
{
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
}

/*
 * Sets up and stops its own queue again and again. Every odd cycle it
 * schedules STRESS_CYCLE_ITEMS items right after init, the first of which
 * sleeps, so that stop most likely finds the others pending. It checks
 * that stop ran them all.
 */
static int stress_cycle_thread(void *data)
{
	struct stress_cycle_worker *w = data;
	char name[16];
	unsigned int i, k;
	int ret;

	snprintf(name, sizeof(name), "nvq-cycle/%u", w->id);
	nv_kthread_q_item_init(&w->items[0].q_item,
			       stress_counted_sleeping_item_run, &w->items[0]);
	for (i = 1; i < STRESS_CYCLE_ITEMS; i++)
		nv_kthread_q_item_init(&w->items[i].q_item,
				       stress_counted_item_run, &w->items[i]);

	for (i = 0; i < w->cycles && !kthread_should_stop(); i++) {
		ret = nv_kthread_q_init(&w->q, name);
		if (ret) {
			stress_fail("cycles: init %u of worker %u failed: %d\n",
				    i, w->id, ret);
			break;
		}

		if (i & 1) {
			for (k = 0; k < STRESS_CYCLE_ITEMS; k++) {
				w->scheduled++;
				if (nv_kthread_q_schedule_q_item(&w->q,
								 &w->items[k].q_item) != 1)
					stress_fail("cycles: schedule of item %u in cycle %u of worker %u returned 0\n",
						    k, i, w->id);
			}
			w->cycles_with_items++;
		}

		nv_kthread_q_stop(&w->q);

		for (k = 0; k < STRESS_CYCLE_ITEMS; k++) {
			if (atomic_read(&w->items[k].runs) !=
			    w->cycles_with_items) {
				stress_fail("cycles: after cycle %u of worker %u, item %u ran %d times, expected %u\n",
					    i, w->id, k,
					    atomic_read(&w->items[k].runs),
					    w->cycles_with_items);
				break;
			}
			if (!list_empty(&w->items[k].q_item.q_list_node))
				stress_fail("cycles: item %u still linked after stop in cycle %u of worker %u\n",
					    k, i, w->id);
		}
		w->cycles_done++;
		if (k < STRESS_CYCLE_ITEMS)
			break;
	}

	WRITE_ONCE(w->finished, true);
	stress_wait_for_stop();
	return 0;
}

/* Runs @cycles init and stop cycles, spread over one thread per CPU. */
static int stress_run_cycles(struct stress_context *ctx)
{
	unsigned int worker_count = num_online_cpus(), i, cpu, done = 0;
	int failures = atomic_read(&stress_failures);
	struct stress_cycle_worker *workers;
	unsigned long start = jiffies;
	u64 scheduled = 0, ran = 0;
	char figures[256];
	bool all_finished;

	workers = kcalloc(worker_count, sizeof(*workers), GFP_KERNEL);
	if (!workers) {
		stress_fail("cycles: out of memory\n");
		return 0;
	}

	i = 0;
	for_each_online_cpu(cpu) {
		if (i == worker_count)
			break;
		workers[i].id = i;
		workers[i].cycles = cycles / worker_count +
				    (i < cycles % worker_count);
		workers[i].thread = kthread_create_on_cpu(stress_cycle_thread,
							  &workers[i], cpu,
							  "nvq-cycler/%u");
		if (IS_ERR(workers[i].thread)) {
			stress_fail("cycles: creating the thread on CPU %u failed: %ld\n",
				    cpu, PTR_ERR(workers[i].thread));
			workers[i].thread = NULL;
			break;
		}
		wake_up_process(workers[i].thread);
		i++;
	}

	do {
		stress_sleep_ms(10);
		all_finished = true;
		for (i = 0; i < worker_count; i++)
			if (workers[i].thread && !READ_ONCE(workers[i].finished))
				all_finished = false;
	} while (!all_finished);

	for (i = 0; i < worker_count; i++) {
		if (workers[i].thread)
			kthread_stop(workers[i].thread);
		done += workers[i].cycles_done;
		scheduled += workers[i].scheduled;
		ran += (u64)workers[i].cycles_with_items * STRESS_CYCLE_ITEMS;
	}
	kfree(workers);

	if (done != cycles)
		stress_fail("cycles: %u of %u cycles ran\n", done, cycles);
	snprintf(figures, sizeof(figures),
		 "%u init/stop cycles on %u threads, %llu items scheduled just before stop, all run by stop; in %lu ms",
		 done, worker_count, ran, stress_ms_since(start));
	ctx->total_cycles += done;
	ctx->total_scheduled += scheduled;
	ctx->total_run += ran;
	return stress_report_phase("cycles",
				   atomic_read(&stress_failures) - failures,
				   figures);
}

/* ---- test=all ---- */

static void stress_context_free(struct stress_context *ctx)
{
	if (!ctx)
		return;
	stress_producers_free(ctx);
	kfree(ctx);
}

static struct stress_context *stress_context_alloc(void)
{
	struct stress_context *ctx;
	unsigned int q;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return NULL;
	for (q = 0; q < STRESS_QUEUES; q++)
		ctx->queues[q].index = q;
	stress_reschedulers_init(ctx);
	if (stress_producers_alloc(ctx)) {
		stress_context_free(ctx);
		return NULL;
	}
	return ctx;
}

#define STRESS_PHASES 5

static int stress_run_all(void)
{
	struct stress_context *ctx;
	unsigned long start = jiffies;
	int passed = 0, failures;

	pr_info("starting: duration_ms=%u stop_rounds=%u cycles=%u, %u online CPUs\n",
		duration_ms, stop_rounds, cycles, num_online_cpus());

	ctx = stress_context_alloc();
	if (!ctx) {
		pr_err("FAILED: out of memory\n");
		return -ENOMEM;
	}

	if (stress_queues_start(ctx) == 0) {
		passed += stress_run_producers(ctx);
		passed += stress_run_stop_race(ctx);
	}
	stress_queues_stop(ctx);
	passed += stress_run_cycles(ctx);

	failures = atomic_read(&stress_failures);
	if (failures == 0 && passed == STRESS_PHASES) {
		pr_info("passed: %d phases, %llu schedule calls, %llu items run, %llu refused, %llu init/stop cycles in %lu ms\n",
			passed, ctx->total_scheduled, ctx->total_run,
			ctx->total_refused, ctx->total_cycles,
			stress_ms_since(start));
	} else {
		pr_err("FAILED: %d of %d phases passed, %d failures, %llu schedule calls, %llu items run, %llu refused, %llu init/stop cycles in %lu ms\n",
		       passed, STRESS_PHASES, failures, ctx->total_scheduled,
		       ctx->total_run, ctx->total_refused, ctx->total_cycles,
		       stress_ms_since(start));
	}
	stress_context_free(ctx);
	return failures == 0 && passed == STRESS_PHASES ? 0 : -EINVAL;
}

/* ---- test=idle ---- */

struct stress_idle_queue {
	nv_kthread_q_t q;
	struct stress_counted_item item;
	unsigned long switches;
	u64 runtime_ns;
};

static unsigned long stress_context_switches(const struct task_struct *t)
{
	return READ_ONCE(t->nvcsw) + READ_ONCE(t->nivcsw);
}

/*
 * Sets up queues, runs one item on each so that the threads went through
 * their loop once, then checks that the idle threads neither ran nor woke
 * for idle_ms: their context switch counts and CPU time stay the same.
 */
static int stress_run_idle(void)
{
	struct stress_idle_queue *queues;
	unsigned long start = jiffies;
	unsigned int i, started = 0;
	struct task_struct *t;
	unsigned long switches;
	u64 runtime_ns;
	char name[16];
	int ret;

	queues = kcalloc(STRESS_IDLE_QUEUES, sizeof(*queues), GFP_KERNEL);
	if (!queues)
		return -ENOMEM;

	for (i = 0; i < STRESS_IDLE_QUEUES; i++) {
		snprintf(name, sizeof(name), "nvq-idle/%u", i);
		ret = nv_kthread_q_init(&queues[i].q, name);
		if (ret) {
			stress_fail("idle: init of queue %u failed: %d\n", i,
				    ret);
			goto out_stop;
		}
		started++;
		nv_kthread_q_item_init(&queues[i].item.q_item,
				       stress_counted_item_run,
				       &queues[i].item);
		if (nv_kthread_q_schedule_q_item(&queues[i].q,
						 &queues[i].item.q_item) != 1)
			stress_fail("idle: schedule on queue %u returned 0\n",
				    i);
		nv_kthread_q_flush(&queues[i].q);
	}

	/* Let each thread get from the flush back to its sleep. */
	stress_sleep_ms(200);
	for (i = 0; i < STRESS_IDLE_QUEUES; i++) {
		t = queues[i].q.q_kthread;
		queues[i].switches = stress_context_switches(t);
		queues[i].runtime_ns = READ_ONCE(t->se.sum_exec_runtime);
		if (READ_ONCE(t->__state) != TASK_INTERRUPTIBLE)
			stress_fail("idle: thread of queue %u is in state %#x, not in an interruptible sleep\n",
				    i, READ_ONCE(t->__state));
	}

	stress_sleep_ms(idle_ms);

	for (i = 0; i < STRESS_IDLE_QUEUES; i++) {
		t = queues[i].q.q_kthread;
		switches = stress_context_switches(t);
		runtime_ns = READ_ONCE(t->se.sum_exec_runtime);
		if (switches != queues[i].switches)
			stress_fail("idle: thread of queue %u switched %lu times while idle\n",
				    i, switches - queues[i].switches);
		if (runtime_ns != queues[i].runtime_ns)
			stress_fail("idle: thread of queue %u ran for %llu ns while idle\n",
				    i, runtime_ns - queues[i].runtime_ns);
		if (READ_ONCE(t->__state) != TASK_INTERRUPTIBLE)
			stress_fail("idle: thread of queue %u is in state %#x after the idle time\n",
				    i, READ_ONCE(t->__state));
	}

out_stop:
	for (i = 0; i < started; i++) {
		nv_kthread_q_stop(&queues[i].q);
		if (atomic_read(&queues[i].item.runs) != 1)
			stress_fail("idle: item of queue %u ran %d times, expected once\n",
				    i, atomic_read(&queues[i].item.runs));
	}
	kfree(queues);

	if (atomic_read(&stress_failures)) {
		pr_err("idle: FAIL: %d failures with %u queues idle for %u ms\n",
		       atomic_read(&stress_failures), STRESS_IDLE_QUEUES,
		       idle_ms);
		return -EINVAL;
	}
	pr_info("idle: passed: %u queues idle for %u ms, no context switch and no CPU time; in %lu ms\n",
		STRESS_IDLE_QUEUES, idle_ms, stress_ms_since(start));
	return 0;
}

/* ---- test=churn ---- */

/* Starts busy producers and rescheduling items, and returns. */
static int stress_churn_start(void)
{
	struct stress_context *ctx;

	ctx = stress_context_alloc();
	if (!ctx)
		return -ENOMEM;
	ctx->load_jiffies = jiffies;
	if (stress_queues_start(ctx))
		goto out_stop;
	stress_reschedulers_start(ctx);
	if (stress_producers_start(ctx))
		goto out_stop;
	stress_churn_context = ctx;
	return 0;

out_stop:
	stress_producers_stop(ctx);
	stress_queues_stop(ctx);
	stress_context_free(ctx);
	pr_err("churn: FAIL: could not start\n");
	return -EINVAL;
}

/*
 * Stops the producers, then the rescheduling items with flag and flush,
 * then the queues, and checks that every accepted item ran once.
 */
static void stress_churn_stop(struct stress_context *ctx)
{
	u64 rescheduler_scheduled, rescheduler_runs;
	struct stress_counts counts;

	stress_producers_stop(ctx);
	stress_reschedulers_stop(ctx);
	stress_queues_stop(ctx);
	stress_check_items(ctx, "churn");

	stress_sum_counts(ctx, &counts);
	stress_rescheduler_counts(ctx, &rescheduler_scheduled,
				  &rescheduler_runs);
	if (atomic_read(&stress_failures))
		pr_err("churn: FAIL: %d failures; %llu scheduled, %llu accepted, %llu run, %llu refused, %llu rescheduling runs, loaded for %lu ms\n",
		       atomic_read(&stress_failures), counts.scheduled,
		       counts.accepted, counts.ran, counts.refused,
		       rescheduler_runs, stress_ms_since(ctx->load_jiffies));
	else
		pr_info("churn: passed: %llu scheduled, %llu accepted, %llu run, %llu refused, %llu rescheduling runs, loaded for %lu ms\n",
			counts.scheduled, counts.accepted, counts.ran,
			counts.refused, rescheduler_runs,
			stress_ms_since(ctx->load_jiffies));
	stress_context_free(ctx);
}

static int __init stress_init(void)
{
	if (sysfs_streq(test, "all"))
		return stress_run_all();
	if (sysfs_streq(test, "idle"))
		return stress_run_idle();
	if (sysfs_streq(test, "churn"))
		return stress_churn_start();

	pr_err("invalid test '%s': expected all, idle or churn\n", test);
	return -EINVAL;
}
module_init(stress_init);

static void __exit stress_exit(void)
{
	if (stress_churn_context)
		stress_churn_stop(stress_churn_context);
}
module_exit(stress_exit);

MODULE_DESCRIPTION("Stress test of the nv_kthread_q API; fails to load when a check fails");
MODULE_LICENSE("Dual MIT/GPL");
