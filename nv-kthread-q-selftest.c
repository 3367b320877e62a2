// SPDX-License-Identifier: MIT
/*
 * Self-test of nv-kthread-q, run at module load and exported as
 * nv_kthread_q_run_self_test().
 *
 * nv-kthread-q.c includes this file at its end, so the cases can use its
 * static helpers. Each case checks observable results: which items ran,
 * how many times, in which order and thread, and what each call returned.
 * A case that deadlocks hangs the load instead of failing; the VM test
 * harness catches that with its boot timeout.
 */

#include <kunit/test-bug.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/mutex.h>
#include <linux/string.h>

#define NVQ_TEST_PRODUCERS 8
#define NVQ_TEST_ITEMS_PER_PRODUCER 100000
#define NVQ_TEST_NODE_TRIES 100
#define NVQ_TEST_NODE_MIN_HITS 80

static DEFINE_MUTEX(nvq_self_test_lock);
static const char *nvq_test_case_name;
static int nvq_test_case_failures;

/*
 * Logs a FAIL line for the running case. Under KUnit, it also fails the
 * running KUnit test; without KUnit that call does nothing.
 */
static __printf(2, 3) void nvq_test_fail(int line, const char *fmt, ...)
{
	char message[256];
	va_list args;

	va_start(args, fmt);
	vscnprintf(message, sizeof(message), fmt, args);
	va_end(args);

	pr_err("FAIL: %s: %s (line %d)\n", nvq_test_case_name, message, line);
	kunit_fail_current_test("%s: %s (line %d)", nvq_test_case_name,
				message, line);
	nvq_test_case_failures++;
}

#define NVQ_CHECK(cond)							\
	do {								\
		if (!(cond))						\
			nvq_test_fail(__LINE__, "expected %s", #cond);	\
	} while (0)

#define NVQ_FAIL(message) nvq_test_fail(__LINE__, "%s", message)

#define NVQ_CHECK_EQ(actual, expected)					\
	do {								\
		long long __actual = (actual);				\
		long long __expected = (expected);			\
									\
		if (__actual != __expected)				\
			nvq_test_fail(__LINE__, "%s is %lld, expected %lld", \
				      #actual, __actual, __expected);	\
	} while (0)

/*
 * Makes misuse of @q counted instead of warned about, until
 * nvq_test_end_misuse(). Returns the count so far.
 */
static int nvq_test_expect_misuse(const nv_kthread_q_t *q)
{
	WRITE_ONCE(nvq_expected_misuse.q, q);
	WRITE_ONCE(nvq_expected_misuse.armed, true);
	return atomic_read(&nvq_expected_misuse.count);
}

/* Ends the window opened by nvq_test_expect_misuse(); returns the count. */
static int nvq_test_end_misuse(void)
{
	WRITE_ONCE(nvq_expected_misuse.armed, false);
	WRITE_ONCE(nvq_expected_misuse.q, NULL);
	return atomic_read(&nvq_expected_misuse.count);
}

static bool nvq_test_item_pending(nv_kthread_q_t *q,
				  nv_kthread_q_item_t *q_item)
{
	unsigned long flags;
	bool pending;

	raw_spin_lock_irqsave(&q->q_lock, flags);
	pending = !list_empty(&q_item->q_list_node);
	raw_spin_unlock_irqrestore(&q->q_lock, flags);
	return pending;
}

/* An item that counts its runs. */
struct nvq_test_item {
	nv_kthread_q_item_t q_item;
	atomic_t runs;
};

static void nvq_test_count_run(void *args)
{
	struct nvq_test_item *item = args;

	atomic_inc(&item->runs);
}

static void nvq_test_item_init(struct nvq_test_item *item)
{
	nv_kthread_q_item_init(&item->q_item, nvq_test_count_run, item);
	atomic_set(&item->runs, 0);
}

/* Schedules a fresh counting item, flushes, and checks it ran once. */
static void nvq_test_check_queue_works(nv_kthread_q_t *q)
{
	struct nvq_test_item item;

	nvq_test_item_init(&item);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(q, &item.q_item), 1);
	nv_kthread_q_flush(q);
	NVQ_CHECK_EQ(atomic_read(&item.runs), 1);
}

static void nvq_test_stop_on_zeroed_queue(void)
{
	nv_kthread_q_t q;
	int misuse;

	memset(&q, 0, sizeof(q));
	misuse = nvq_test_expect_misuse(&q);
	nv_kthread_q_stop(&q);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 0);
	NVQ_CHECK(!q.q_kthread);
}

static void nvq_test_stop_twice(void)
{
	struct nvq_test_item item;
	nv_kthread_q_t q;
	int misuse;

	if (nv_kthread_q_init(&q, "nvq-test-stop2")) {
		NVQ_FAIL("init failed");
		return;
	}

	nvq_test_item_init(&item);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &item.q_item), 1);

	misuse = nvq_test_expect_misuse(&q);
	nv_kthread_q_stop(&q);
	NVQ_CHECK_EQ(atomic_read(&item.runs), 1);
	nv_kthread_q_stop(&q);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 0);
	NVQ_CHECK(!q.q_kthread);
}

static void nvq_test_init_stop_reuse(void)
{
	nv_kthread_q_t q;

	if (nv_kthread_q_init(&q, "nvq-test-first")) {
		NVQ_FAIL("first init failed");
		return;
	}
	nvq_test_check_queue_works(&q);
	nv_kthread_q_stop(&q);

	if (nv_kthread_q_init(&q, "nvq-test-again")) {
		NVQ_FAIL("second init failed");
		return;
	}
	NVQ_CHECK(!strcmp(q.q_kthread->comm, "nvq-test-again"));
	nvq_test_check_queue_works(&q);
	nv_kthread_q_stop(&q);
	NVQ_CHECK(!q.q_kthread);
}

/* An item that writes a value derived from its own index. */
struct nvq_test_slot {
	nv_kthread_q_item_t q_item;
	int index;
	int result;
};

static void nvq_test_slot_run(void *args)
{
	struct nvq_test_slot *slot = args;

	slot->result = slot->index * 7 + 3;
}

static void nvq_test_items_run_with_own_args(void)
{
	const int count = 64;
	struct nvq_test_slot *slots;
	nv_kthread_q_t q;
	int i;

	slots = kcalloc(count, sizeof(*slots), GFP_KERNEL);
	if (!slots) {
		NVQ_FAIL("out of memory");
		return;
	}

	if (nv_kthread_q_init(&q, "nvq-test-args")) {
		NVQ_FAIL("init failed");
		goto out_free;
	}

	for (i = 0; i < count; i++) {
		slots[i].index = i;
		slots[i].result = -1;
		nv_kthread_q_item_init(&slots[i].q_item, nvq_test_slot_run,
				       &slots[i]);
		NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &slots[i].q_item),
			     1);
	}
	nv_kthread_q_flush(&q);

	for (i = 0; i < count; i++)
		NVQ_CHECK_EQ(slots[i].result, i * 7 + 3);

	nv_kthread_q_stop(&q);
out_free:
	kfree(slots);
}

/* Items that record the order in which they ran. */
struct nvq_test_order {
	nv_kthread_q_item_t q_item;
	int index;
	int *log;
	int *log_length;
};

static void nvq_test_order_run(void *args)
{
	struct nvq_test_order *entry = args;

	entry->log[(*entry->log_length)++] = entry->index;
}

static void nvq_test_items_run_in_fifo_order(void)
{
	const int count = 1000;
	struct nvq_test_order *entries;
	int log_length = 0;
	nv_kthread_q_t q;
	int *log;
	int i;

	entries = kcalloc(count, sizeof(*entries), GFP_KERNEL);
	log = kcalloc(count, sizeof(*log), GFP_KERNEL);
	if (!entries || !log) {
		NVQ_FAIL("out of memory");
		goto out_free;
	}

	if (nv_kthread_q_init(&q, "nvq-test-fifo")) {
		NVQ_FAIL("init failed");
		goto out_free;
	}

	for (i = 0; i < count; i++) {
		entries[i].index = i;
		entries[i].log = log;
		entries[i].log_length = &log_length;
		nv_kthread_q_item_init(&entries[i].q_item, nvq_test_order_run,
				       &entries[i]);
		nv_kthread_q_schedule_q_item(&q, &entries[i].q_item);
	}
	nv_kthread_q_flush(&q);

	NVQ_CHECK_EQ(log_length, count);
	for (i = 0; i < log_length; i++) {
		if (log[i] != i) {
			NVQ_CHECK_EQ(log[i], i);
			break;
		}
	}

	nv_kthread_q_stop(&q);
out_free:
	kfree(log);
	kfree(entries);
}

static void nvq_test_flush_twice_in_a_row(void)
{
	struct nvq_test_item items[10];
	nv_kthread_q_t q;
	int i;

	if (nv_kthread_q_init(&q, "nvq-test-flush2")) {
		NVQ_FAIL("init failed");
		return;
	}

	for (i = 0; i < ARRAY_SIZE(items); i++) {
		nvq_test_item_init(&items[i]);
		nv_kthread_q_schedule_q_item(&q, &items[i].q_item);
	}
	nv_kthread_q_flush(&q);
	nv_kthread_q_flush(&q);
	for (i = 0; i < ARRAY_SIZE(items); i++)
		NVQ_CHECK_EQ(atomic_read(&items[i].runs), 1);

	/* The queue still accepts and runs items after an empty flush. */
	for (i = 0; i < ARRAY_SIZE(items); i++)
		nv_kthread_q_schedule_q_item(&q, &items[i].q_item);
	nv_kthread_q_flush(&q);
	for (i = 0; i < ARRAY_SIZE(items); i++)
		NVQ_CHECK_EQ(atomic_read(&items[i].runs), 2);

	nv_kthread_q_stop(&q);
}

static bool nvq_test_queue_has_items(nv_kthread_q_t *q)
{
	unsigned long flags;
	bool has_items;

	raw_spin_lock_irqsave(&q->q_lock, flags);
	has_items = !list_empty(&q->q_list_head);
	raw_spin_unlock_irqrestore(&q->q_lock, flags);
	return has_items;
}

/*
 * A first item that is still running when flush queues its first
 * sentinel, and then queues a slow second item behind that sentinel.
 */
struct nvq_test_chain {
	nv_kthread_q_t *q;
	nv_kthread_q_item_t first;
	struct nvq_test_item second;
	struct completion first_started;
	bool first_saw_sentinel;
};

static void nvq_test_chain_second_run(void *args)
{
	struct nvq_test_item *second = args;

	/* Slow enough that a flush which did not wait for it returns first. */
	msleep(50);
	atomic_inc(&second->runs);
}

static void nvq_test_chain_first_run(void *args)
{
	struct nvq_test_chain *chain = args;
	int waited_ms;

	complete(&chain->first_started);
	for (waited_ms = 0; waited_ms < 5000; waited_ms++) {
		if (nvq_test_queue_has_items(chain->q))
			break;
		usleep_range(1000, 2000);
	}
	chain->first_saw_sentinel = nvq_test_queue_has_items(chain->q);
	nv_kthread_q_schedule_q_item(chain->q, &chain->second.q_item);
}

static void nvq_test_flush_waits_for_items_queued_by_items(void)
{
	struct nvq_test_chain chain = { };
	nv_kthread_q_t q;

	if (nv_kthread_q_init(&q, "nvq-test-chain")) {
		NVQ_FAIL("init failed");
		return;
	}

	chain.q = &q;
	init_completion(&chain.first_started);
	nv_kthread_q_item_init(&chain.first, nvq_test_chain_first_run, &chain);
	nv_kthread_q_item_init(&chain.second.q_item, nvq_test_chain_second_run,
			       &chain.second);
	atomic_set(&chain.second.runs, 0);

	nv_kthread_q_schedule_q_item(&q, &chain.first);
	wait_for_completion(&chain.first_started);
	nv_kthread_q_flush(&q);

	NVQ_CHECK(chain.first_saw_sentinel);
	NVQ_CHECK_EQ(atomic_read(&chain.second.runs), 1);
	nv_kthread_q_stop(&q);
}

/* An item that schedules itself again from its own callback. */
struct nvq_test_rescheduler {
	nv_kthread_q_t *q;
	nv_kthread_q_item_t q_item;
	bool stop_rescheduling;		/* the owner's flag */
	bool ignore_flag;		/* reschedule until refused */
	atomic_t runs;
	atomic_t accepted;		/* schedule calls that returned 1 */
	atomic_t refused;		/* schedule calls that returned 0 */
};

static void nvq_test_rescheduler_schedule(struct nvq_test_rescheduler *r)
{
	if (nv_kthread_q_schedule_q_item(r->q, &r->q_item))
		atomic_inc(&r->accepted);
	else
		atomic_inc(&r->refused);
}

static void nvq_test_rescheduler_run(void *args)
{
	struct nvq_test_rescheduler *r = args;

	atomic_inc(&r->runs);
	if (r->ignore_flag || !READ_ONCE(r->stop_rescheduling))
		nvq_test_rescheduler_schedule(r);
}

/*
 * Starts a rescheduler on @q and waits until it has run a few times, so
 * that it is pending or running whenever the caller stops it.
 */
static void nvq_test_rescheduler_start(struct nvq_test_rescheduler *r,
				       nv_kthread_q_t *q, bool ignore_flag)
{
	int waited_ms;

	memset(r, 0, sizeof(*r));
	r->q = q;
	r->ignore_flag = ignore_flag;
	nv_kthread_q_item_init(&r->q_item, nvq_test_rescheduler_run, r);
	nvq_test_rescheduler_schedule(r);

	for (waited_ms = 0; waited_ms < 5000; waited_ms++) {
		if (atomic_read(&r->runs) >= 100)
			return;
		usleep_range(1000, 2000);
	}
	NVQ_FAIL("the rescheduling item did not run 100 times in 5 s");
}

/*
 * Sets the owner's flag while the item keeps rescheduling itself, then
 * drains it with flush or with stop. Every accepted schedule must have run,
 * and the item must not be left linked.
 */
static void nvq_test_drain_rescheduler(bool by_stop)
{
	struct nvq_test_rescheduler r;
	nv_kthread_q_t q;

	if (nv_kthread_q_init(&q, "nvq-test-resch")) {
		NVQ_FAIL("init failed");
		return;
	}

	nvq_test_rescheduler_start(&r, &q, false);
	WRITE_ONCE(r.stop_rescheduling, true);
	if (by_stop)
		nv_kthread_q_stop(&q);
	else
		nv_kthread_q_flush(&q);

	NVQ_CHECK(!nvq_test_item_pending(&q, &r.q_item));
	NVQ_CHECK_EQ(atomic_read(&r.runs), atomic_read(&r.accepted));
	NVQ_CHECK_EQ(atomic_read(&r.refused), 0);

	nv_kthread_q_stop(&q);
}

static void nvq_test_rescheduling_item_drained_by_flush(void)
{
	nvq_test_drain_rescheduler(false);
}

static void nvq_test_rescheduling_item_drained_by_stop(void)
{
	nvq_test_drain_rescheduler(true);
}

/*
 * An item that ignores its flag keeps rescheduling until stop begins.
 * The run that stop drains is refused once, and nothing is left linked.
 */
static void nvq_test_schedule_on_stopping_queue(void)
{
	struct nvq_test_rescheduler r;
	nv_kthread_q_t q;
	int misuse;

	if (nv_kthread_q_init(&q, "nvq-test-stopng")) {
		NVQ_FAIL("init failed");
		return;
	}

	nvq_test_rescheduler_start(&r, &q, true);
	misuse = nvq_test_expect_misuse(&q);
	nv_kthread_q_stop(&q);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 0);

	NVQ_CHECK_EQ(atomic_read(&r.refused), 1);
	NVQ_CHECK_EQ(atomic_read(&r.runs), atomic_read(&r.accepted));
	NVQ_CHECK(list_empty(&r.q_item.q_list_node));
}

static void nvq_test_schedule_on_stopped_queue(void)
{
	struct nvq_test_item item;
	nv_kthread_q_t q;
	int misuse;

	if (nv_kthread_q_init(&q, "nvq-test-stoppd")) {
		NVQ_FAIL("init failed");
		return;
	}
	nv_kthread_q_stop(&q);

	nvq_test_item_init(&item);
	misuse = nvq_test_expect_misuse(&q);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &item.q_item), 0);
	nv_kthread_q_flush(&q);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 2);

	NVQ_CHECK(list_empty(&item.q_item.q_list_node));
	NVQ_CHECK_EQ(atomic_read(&item.runs), 0);
}

struct nvq_test_producer {
	nv_kthread_q_t *q;
	struct nvq_test_item *items;
	int count;
	int accepted;
	struct completion done;
};

static int nvq_test_producer_main(void *data)
{
	struct nvq_test_producer *producer = data;
	int i;

	for (i = 0; i < producer->count; i++) {
		producer->accepted += nv_kthread_q_schedule_q_item(producer->q,
						&producer->items[i].q_item);
		if (i % 1024 == 0)
			cond_resched();
	}
	nv_kthread_q_flush(producer->q);

	/* Completes and exits without returning into module text. */
	kthread_complete_and_exit(&producer->done, 0);
}

/*
 * NVQ_TEST_PRODUCERS threads each schedule their own distinct items, then
 * flush, all at once. Every item must run exactly once.
 */
static void nvq_test_many_producers_exact_count(void)
{
	const long total = (long)NVQ_TEST_PRODUCERS * NVQ_TEST_ITEMS_PER_PRODUCER;
	struct nvq_test_producer *producers;
	struct nvq_test_item *items;
	long runs = 0, wrong = 0, first_wrong = -1;
	nv_kthread_q_t q;
	int started = 0;
	long i;
	int p;

	producers = kcalloc(NVQ_TEST_PRODUCERS, sizeof(*producers), GFP_KERNEL);
	items = vmalloc(array_size(total, sizeof(*items)));
	if (!producers || !items) {
		NVQ_FAIL("out of memory");
		goto out_free;
	}
	for (i = 0; i < total; i++)
		nvq_test_item_init(&items[i]);

	if (nv_kthread_q_init(&q, "nvq-test-many")) {
		NVQ_FAIL("init failed");
		goto out_free;
	}

	for (p = 0; p < NVQ_TEST_PRODUCERS; p++) {
		struct nvq_test_producer *producer = &producers[p];
		struct task_struct *thread;

		producer->q = &q;
		producer->items = &items[p * NVQ_TEST_ITEMS_PER_PRODUCER];
		producer->count = NVQ_TEST_ITEMS_PER_PRODUCER;
		producer->accepted = 0;
		init_completion(&producer->done);

		thread = kthread_run(nvq_test_producer_main, producer,
				     "nvq-test-prod%d", p);
		if (IS_ERR(thread)) {
			NVQ_FAIL("could not start a producer thread");
			break;
		}
		started++;
	}

	for (p = 0; p < started; p++) {
		wait_for_completion(&producers[p].done);
		NVQ_CHECK_EQ(producers[p].accepted, NVQ_TEST_ITEMS_PER_PRODUCER);
	}
	nv_kthread_q_flush(&q);

	for (i = 0; i < (long)started * NVQ_TEST_ITEMS_PER_PRODUCER; i++) {
		int item_runs = atomic_read(&items[i].runs);

		runs += item_runs;
		if (item_runs != 1 && wrong++ == 0)
			first_wrong = i;
	}
	NVQ_CHECK_EQ(runs, (long)started * NVQ_TEST_ITEMS_PER_PRODUCER);
	NVQ_CHECK_EQ(started, NVQ_TEST_PRODUCERS);
	if (wrong)
		nvq_test_fail(__LINE__, "%ld items did not run exactly once; the first is item %ld, which ran %d times",
			      wrong, first_wrong,
			      atomic_read(&items[first_wrong].runs));

	nv_kthread_q_stop(&q);
out_free:
	vfree(items);
	kfree(producers);
}

#define NVQ_TEST_RACERS 2
#define NVQ_TEST_RACER_ITEMS 64

/*
 * A thread that keeps scheduling its own items until schedule returns 0.
 * It reschedules an item only after the item ran, so the item cannot be
 * pending, and a return of 0 can only mean that the queue is stopping.
 */
struct nvq_test_racer {
	nv_kthread_q_t *q;
	struct nvq_test_item items[NVQ_TEST_RACER_ITEMS];
	int accepted[NVQ_TEST_RACER_ITEMS];	/* schedule calls that returned 1 */
	atomic_t total_accepted;
	struct completion done;
};

static int nvq_test_racer_main(void *data)
{
	struct nvq_test_racer *racer = data;
	int i;

	for (;;) {
		for (i = 0; i < NVQ_TEST_RACER_ITEMS; i++) {
			struct nvq_test_item *item = &racer->items[i];

			/* Still queued or running since the last schedule. */
			if (atomic_read_acquire(&item->runs) != racer->accepted[i])
				continue;

			if (!nv_kthread_q_schedule_q_item(racer->q, &item->q_item))
				goto out;

			racer->accepted[i]++;
			atomic_inc(&racer->total_accepted);
		}
		cond_resched();
	}

out:
	kthread_complete_and_exit(&racer->done, 0);
}

/*
 * Threads on other CPUs schedule items while the queue is stopped. Every
 * schedule call that returned 1 must lead to exactly one run, and no item
 * may be left linked after stop.
 */
static void nvq_test_stop_racing_schedule(void)
{
	struct nvq_test_racer *racers;
	nv_kthread_q_t q;
	int started = 0;
	int r, i;

	racers = kcalloc(NVQ_TEST_RACERS, sizeof(*racers), GFP_KERNEL);
	if (!racers) {
		NVQ_FAIL("out of memory");
		return;
	}

	if (nv_kthread_q_init(&q, "nvq-test-race")) {
		NVQ_FAIL("init failed");
		goto out_free;
	}

	for (r = 0; r < NVQ_TEST_RACERS; r++) {
		struct task_struct *thread;

		racers[r].q = &q;
		for (i = 0; i < NVQ_TEST_RACER_ITEMS; i++)
			nvq_test_item_init(&racers[r].items[i]);
		init_completion(&racers[r].done);

		thread = kthread_run(nvq_test_racer_main, &racers[r],
				     "nvq-test-race%d", r);
		if (IS_ERR(thread)) {
			NVQ_FAIL("could not start a racing thread");
			break;
		}
		started++;
	}

	/* Stop once every racer is well under way. */
	for (i = 0; i < 5000; i++) {
		for (r = 0; r < started; r++) {
			if (atomic_read(&racers[r].total_accepted) < 1000)
				break;
		}
		if (r == started)
			break;
		usleep_range(1000, 2000);
	}

	/* A racer may call schedule after stop has ended, which is misuse. */
	nvq_test_expect_misuse(&q);
	nv_kthread_q_stop(&q);
	for (r = 0; r < started; r++)
		wait_for_completion(&racers[r].done);
	nvq_test_end_misuse();

	for (r = 0; r < started; r++) {
		struct nvq_test_racer *racer = &racers[r];
		int wrong = 0;

		NVQ_CHECK(atomic_read(&racer->total_accepted) >= 1000);
		for (i = 0; i < NVQ_TEST_RACER_ITEMS; i++) {
			struct nvq_test_item *item = &racer->items[i];

			if (atomic_read(&item->runs) != racer->accepted[i] ||
			    !list_empty(&item->q_item.q_list_node))
				wrong++;
		}
		if (wrong)
			nvq_test_fail(__LINE__, "racer %d: %d of %d items ran a different number of times than accepted, or were left linked",
				      r, wrong, NVQ_TEST_RACER_ITEMS);
	}

out_free:
	kfree(racers);
}

static void nvq_test_one_item_scheduled_many_times(void)
{
	struct nvq_test_item item;
	int accepted = 0;
	nv_kthread_q_t q;
	int i;

	if (nv_kthread_q_init(&q, "nvq-test-repeat")) {
		NVQ_FAIL("init failed");
		return;
	}

	nvq_test_item_init(&item);
	for (i = 0; i < 1000; i++)
		accepted += nv_kthread_q_schedule_q_item(&q, &item.q_item);
	nv_kthread_q_flush(&q);

	NVQ_CHECK(accepted >= 1);
	NVQ_CHECK_EQ(atomic_read(&item.runs), accepted);
	nv_kthread_q_stop(&q);
}

static void nvq_test_init_on_node_places_stack(void)
{
	nv_kthread_q_t q;
	int node;

	for_each_node_state(node, N_MEMORY) {
		int hits = 0;
		int i;

		if (!node_state(node, N_CPU))
			continue;

		for (i = 0; i < NVQ_TEST_NODE_TRIES; i++) {
			if (nv_kthread_q_init_on_node(&q, "nvq-test-node",
						      node)) {
				NVQ_FAIL("init failed");
				return;
			}
			if (nvq_task_stack_node(q.q_kthread) == node)
				hits++;
			nv_kthread_q_stop(&q);
		}

		pr_debug("node %d: %d of %d thread stacks on the node\n",
			 node, hits, NVQ_TEST_NODE_TRIES);
		if (hits < NVQ_TEST_NODE_MIN_HITS)
			nvq_test_fail(__LINE__, "node %d: %d of %d thread stacks on the node, expected at least %d",
				      node, hits, NVQ_TEST_NODE_TRIES,
				      NVQ_TEST_NODE_MIN_HITS);
	}
}

/* An item that records the thread it ran in. */
struct nvq_test_thread_probe {
	nv_kthread_q_item_t q_item;
	struct task_struct *ran_in;
};

static void nvq_test_thread_probe_run(void *args)
{
	struct nvq_test_thread_probe *probe = args;

	probe->ran_in = current;
}

static void nvq_test_two_queues_two_threads(void)
{
	struct nvq_test_thread_probe probe_a = { }, probe_b = { };
	nv_kthread_q_t qa, qb;

	if (nv_kthread_q_init(&qa, "nvq-test-qa")) {
		NVQ_FAIL("init of the first queue failed");
		return;
	}
	if (nv_kthread_q_init(&qb, "nvq-test-qb")) {
		NVQ_FAIL("init of the second queue failed");
		nv_kthread_q_stop(&qa);
		return;
	}

	nv_kthread_q_item_init(&probe_a.q_item, nvq_test_thread_probe_run,
			       &probe_a);
	nv_kthread_q_item_init(&probe_b.q_item, nvq_test_thread_probe_run,
			       &probe_b);
	nv_kthread_q_schedule_q_item(&qa, &probe_a.q_item);
	nv_kthread_q_schedule_q_item(&qb, &probe_b.q_item);
	nv_kthread_q_flush(&qa);
	nv_kthread_q_flush(&qb);

	NVQ_CHECK(probe_a.ran_in == qa.q_kthread);
	NVQ_CHECK(probe_b.ran_in == qb.q_kthread);
	NVQ_CHECK(probe_a.ran_in != probe_b.ran_in);

	nv_kthread_q_stop(&qa);
	nv_kthread_q_stop(&qb);
}

struct nvq_test_freed_item {
	nv_kthread_q_item_t q_item;
	atomic_t *runs;
};

static void nvq_test_free_self(void *args)
{
	struct nvq_test_freed_item *freed = args;

	atomic_inc(freed->runs);
	kfree(freed);
}

static void nvq_test_item_freed_in_callback(void)
{
	struct nvq_test_freed_item *freed;
	atomic_t runs = ATOMIC_INIT(0);
	nv_kthread_q_t q;

	if (nv_kthread_q_init(&q, "nvq-test-free")) {
		NVQ_FAIL("init failed");
		return;
	}

	freed = kmalloc(sizeof(*freed), GFP_KERNEL);
	if (freed) {
		freed->runs = &runs;
		nv_kthread_q_item_init(&freed->q_item, nvq_test_free_self,
				       freed);
		NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &freed->q_item),
			     1);
		nv_kthread_q_flush(&q);
		NVQ_CHECK_EQ(atomic_read(&runs), 1);
	} else {
		NVQ_FAIL("out of memory");
	}

	nvq_test_check_queue_works(&q);
	nv_kthread_q_stop(&q);
}

/* A timer that schedules an item each time it fires. */
struct nvq_test_timer {
	struct hrtimer timer;
	nv_kthread_q_t *q;
	struct nvq_test_item item;
	bool want_hardirq;
	bool wrong_context;
	int fires_left;
	int accepted;
	struct completion done;
};

static void nvq_test_hrtimer_setup(struct hrtimer *timer,
				   enum hrtimer_restart (*function)(struct hrtimer *),
				   enum hrtimer_mode mode)
{
#ifdef NVQ_HAVE_HRTIMER_SETUP
	/* NOTE: only built on 6.13 and newer; the test matrix stops at 6.12. */
	hrtimer_setup(timer, function, CLOCK_MONOTONIC, mode);
#else
	hrtimer_init(timer, CLOCK_MONOTONIC, mode);
	timer->function = function;
#endif
}

static enum hrtimer_restart nvq_test_timer_fire(struct hrtimer *timer)
{
	struct nvq_test_timer *t = container_of(timer, struct nvq_test_timer,
						timer);
	bool in_expected_context = t->want_hardirq ? in_hardirq() :
						     in_serving_softirq();

	if (!in_expected_context)
		t->wrong_context = true;
	t->accepted += nv_kthread_q_schedule_q_item(t->q, &t->item.q_item);

	if (--t->fires_left > 0) {
		hrtimer_forward_now(timer, ns_to_ktime(200 * NSEC_PER_USEC));
		return HRTIMER_RESTART;
	}

	complete(&t->done);
	return HRTIMER_NORESTART;
}

static void nvq_test_schedule_from_timer(enum hrtimer_mode mode,
					 bool want_hardirq)
{
	struct nvq_test_timer *t;
	nv_kthread_q_t q;

	t = kzalloc(sizeof(*t), GFP_KERNEL);
	if (!t) {
		NVQ_FAIL("out of memory");
		return;
	}

	if (nv_kthread_q_init(&q, "nvq-test-timer")) {
		NVQ_FAIL("init failed");
		goto out_free;
	}

	t->q = &q;
	t->want_hardirq = want_hardirq;
	t->fires_left = 100;
	nvq_test_item_init(&t->item);
	init_completion(&t->done);
	nvq_test_hrtimer_setup(&t->timer, nvq_test_timer_fire, mode);
	hrtimer_start(&t->timer, ns_to_ktime(200 * NSEC_PER_USEC), mode);

	wait_for_completion(&t->done);
	hrtimer_cancel(&t->timer);
	nv_kthread_q_flush(&q);

	NVQ_CHECK(!t->wrong_context);
	NVQ_CHECK(t->accepted >= 1);
	NVQ_CHECK_EQ(atomic_read(&t->item.runs), t->accepted);

	nv_kthread_q_stop(&q);
out_free:
	kfree(t);
}

static void nvq_test_schedule_from_hardirq(void)
{
	nvq_test_schedule_from_timer(HRTIMER_MODE_REL_HARD, true);
}

static void nvq_test_schedule_from_softirq(void)
{
	nvq_test_schedule_from_timer(HRTIMER_MODE_REL_SOFT, false);
}

static void nvq_test_idle_queue_sleeps(void)
{
	unsigned long switches;
	struct task_struct *thread;
	nv_kthread_q_t q;

	if (nv_kthread_q_init(&q, "nvq-test-idle")) {
		NVQ_FAIL("init failed");
		return;
	}
	nvq_test_check_queue_works(&q);

	/* Give the thread time to go back to sleep after the flush. */
	msleep(20);
	thread = q.q_kthread;
	switches = thread->nvcsw + thread->nivcsw;
	msleep(100);

	NVQ_CHECK_EQ(READ_ONCE(thread->__state), TASK_INTERRUPTIBLE);
	NVQ_CHECK_EQ(thread->nvcsw + thread->nivcsw - switches, 0);
	nv_kthread_q_stop(&q);
}

static void nvq_test_name_is_plain_text(void)
{
	nv_kthread_q_t q;

	if (nv_kthread_q_init(&q, "nvq%s%n%d%p")) {
		NVQ_FAIL("init failed");
		return;
	}
	NVQ_CHECK(!strcmp(q.q_kthread->comm, "nvq%s%n%d%p"));
	nv_kthread_q_stop(&q);

	/* The kernel keeps the first TASK_COMM_LEN - 1 characters. */
	if (nv_kthread_q_init(&q, "nvq-test-0123456789")) {
		NVQ_FAIL("init with a long name failed");
		return;
	}
	NVQ_CHECK(!strcmp(q.q_kthread->comm, "nvq-test-012345"));
	nv_kthread_q_stop(&q);
}

static void nvq_test_invalid_node_falls_back(void)
{
	const int nodes[] = { nr_node_ids, nr_node_ids + 100, -2, INT_MIN };
	nv_kthread_q_t q;
	int misuse;
	int i;

	for (i = 0; i < ARRAY_SIZE(nodes); i++) {
		misuse = nvq_test_expect_misuse(&q);
		NVQ_CHECK_EQ(nv_kthread_q_init_on_node(&q, "nvq-test-badnode",
						       nodes[i]), 0);
		NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 1);
		if (!q.q_kthread)
			continue;

		nvq_test_check_queue_works(&q);
		nv_kthread_q_stop(&q);
	}
}

static void nvq_test_misuse_on_zeroed_queue(void)
{
	struct nvq_test_item item;
	nv_kthread_q_t q;
	int misuse;

	memset(&q, 0, sizeof(q));
	nvq_test_item_init(&item);

	misuse = nvq_test_expect_misuse(&q);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &item.q_item), 0);
	nv_kthread_q_flush(&q);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 2);

	NVQ_CHECK(list_empty(&item.q_item.q_list_node));
	NVQ_CHECK(!q.q_kthread);
}

static void nvq_test_misuse_after_failed_init(void)
{
	struct nvq_test_item item;
	nv_kthread_q_t q;
	int misuse;

	nvq_test_item_init(&item);
	misuse = nvq_test_expect_misuse(&q);
	NVQ_CHECK_EQ(nv_kthread_q_init(&q, NULL), -EINVAL);
	nv_kthread_q_stop(&q);
	nv_kthread_q_flush(&q);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &item.q_item), 0);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 3);

	NVQ_CHECK(list_empty(&item.q_item.q_list_node));
}

static void nvq_test_misuse_with_null_pointers(void)
{
	struct nvq_test_item item;
	int misuse;

	nvq_test_item_init(&item);
	misuse = nvq_test_expect_misuse(NULL);
	NVQ_CHECK_EQ(nv_kthread_q_init(NULL, "nvq-test-null"), -EINVAL);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(NULL, &item.q_item), 0);
	nv_kthread_q_flush(NULL);
	nv_kthread_q_stop(NULL);
	nv_kthread_q_item_init(NULL, nvq_test_count_run, NULL);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 5);
}

static void nvq_test_misuse_with_bad_items(void)
{
	nv_kthread_q_item_t zeroed, no_function;
	nv_kthread_q_t q;
	int misuse;

	if (nv_kthread_q_init(&q, "nvq-test-baditm")) {
		NVQ_FAIL("init failed");
		return;
	}

	memset(&zeroed, 0, sizeof(zeroed));
	nv_kthread_q_item_init(&no_function, NULL, NULL);

	misuse = nvq_test_expect_misuse(&q);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, NULL), 0);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &zeroed), 0);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &no_function), 0);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 3);

	NVQ_CHECK(list_empty(&no_function.q_list_node));
	nvq_test_check_queue_works(&q);
	nv_kthread_q_stop(&q);
}

/* A callback that tries to flush and stop its own queue. */
struct nvq_test_reentry {
	nv_kthread_q_t *q;
	nv_kthread_q_item_t q_item;
	bool returned;
};

static void nvq_test_reentry_run(void *args)
{
	struct nvq_test_reentry *reentry = args;

	nv_kthread_q_flush(reentry->q);
	nv_kthread_q_stop(reentry->q);
	reentry->returned = true;
}

static void nvq_test_flush_and_stop_from_callback(void)
{
	struct nvq_test_reentry reentry = { };
	nv_kthread_q_t q;
	int misuse;

	if (nv_kthread_q_init(&q, "nvq-test-reentr")) {
		NVQ_FAIL("init failed");
		return;
	}

	reentry.q = &q;
	nv_kthread_q_item_init(&reentry.q_item, nvq_test_reentry_run,
			       &reentry);

	misuse = nvq_test_expect_misuse(&q);
	NVQ_CHECK_EQ(nv_kthread_q_schedule_q_item(&q, &reentry.q_item), 1);
	nv_kthread_q_flush(&q);
	NVQ_CHECK_EQ(nvq_test_end_misuse() - misuse, 2);

	NVQ_CHECK(reentry.returned);
	NVQ_CHECK(q.q_kthread);
	nvq_test_check_queue_works(&q);
	nv_kthread_q_stop(&q);
}

struct nvq_test_case {
	const char *name;
	void (*run)(void);
};

#define NVQ_TEST_CASE(name) { #name, nvq_test_##name }

static const struct nvq_test_case nvq_test_cases[] = {
	NVQ_TEST_CASE(stop_on_zeroed_queue),
	NVQ_TEST_CASE(stop_twice),
	NVQ_TEST_CASE(init_stop_reuse),
	NVQ_TEST_CASE(items_run_with_own_args),
	NVQ_TEST_CASE(items_run_in_fifo_order),
	NVQ_TEST_CASE(flush_twice_in_a_row),
	NVQ_TEST_CASE(flush_waits_for_items_queued_by_items),
	NVQ_TEST_CASE(rescheduling_item_drained_by_flush),
	NVQ_TEST_CASE(rescheduling_item_drained_by_stop),
	NVQ_TEST_CASE(many_producers_exact_count),
	NVQ_TEST_CASE(one_item_scheduled_many_times),
	NVQ_TEST_CASE(init_on_node_places_stack),
	NVQ_TEST_CASE(two_queues_two_threads),
	NVQ_TEST_CASE(item_freed_in_callback),
	NVQ_TEST_CASE(schedule_from_hardirq),
	NVQ_TEST_CASE(schedule_from_softirq),
	NVQ_TEST_CASE(schedule_on_stopping_queue),
	NVQ_TEST_CASE(schedule_on_stopped_queue),
	NVQ_TEST_CASE(stop_racing_schedule),
	NVQ_TEST_CASE(idle_queue_sleeps),
	NVQ_TEST_CASE(name_is_plain_text),
	NVQ_TEST_CASE(invalid_node_falls_back),
	NVQ_TEST_CASE(misuse_on_zeroed_queue),
	NVQ_TEST_CASE(misuse_after_failed_init),
	NVQ_TEST_CASE(misuse_with_null_pointers),
	NVQ_TEST_CASE(misuse_with_bad_items),
	NVQ_TEST_CASE(flush_and_stop_from_callback),
};

/* Runs one case; returns its number of failed checks. */
static int nvq_test_run_case(const struct nvq_test_case *test_case)
{
	int failures;

	mutex_lock(&nvq_self_test_lock);
	nvq_test_case_name = test_case->name;
	nvq_test_case_failures = 0;

	test_case->run();
	nvq_test_end_misuse();

	failures = nvq_test_case_failures;
	mutex_unlock(&nvq_self_test_lock);

	if (!failures)
		pr_debug("self-test case %s passed\n", test_case->name);
	return failures;
}

int nv_kthread_q_run_self_test(void)
{
	const int total = ARRAY_SIZE(nvq_test_cases);
	ktime_t start = ktime_get();
	int failed = 0;
	s64 elapsed_ms;
	int i;

	for (i = 0; i < total; i++) {
		if (nvq_test_run_case(&nvq_test_cases[i]))
			failed++;
	}

	elapsed_ms = ktime_ms_delta(ktime_get(), start);
	if (failed) {
		pr_err("self-test FAILED: %d of %d cases failed in %lld ms\n",
		       failed, total, elapsed_ms);
		return -1;
	}

	pr_info("self-test passed: %d of %d cases in %lld ms\n",
		total, total, elapsed_ms);
	return 0;
}
EXPORT_SYMBOL(nv_kthread_q_run_self_test);

#if IS_ENABLED(CONFIG_KUNIT)
#include <kunit/test.h>

/*
 * The same cases as a KUnit suite, one parameter per case, for kernels
 * built with CONFIG_KUNIT. nvq_test_fail() fails the running KUnit test,
 * and the suite reports KTAP like any other.
 */
static void nvq_kunit_case_name(const struct nvq_test_case *test_case,
				char *desc)
{
	strscpy(desc, test_case->name, KUNIT_PARAM_DESC_SIZE);
}

KUNIT_ARRAY_PARAM(nvq_kunit, nvq_test_cases, nvq_kunit_case_name);

static void nvq_kunit_run_case(struct kunit *test)
{
	const struct nvq_test_case *test_case = test->param_value;

	KUNIT_EXPECT_EQ(test, nvq_test_run_case(test_case), 0);
}

static struct kunit_case nvq_kunit_cases[] = {
	KUNIT_CASE_PARAM(nvq_kunit_run_case, nvq_kunit_gen_params),
	{ }
};

static struct kunit_suite nvq_kunit_suite = {
	.name = "nv_kthread_q",
	.test_cases = nvq_kunit_cases,
};
kunit_test_suite(nvq_kunit_suite);
#endif /* CONFIG_KUNIT */
