/*
 * worker.c: a small, bounded pool of threads owned by the module, for work
 * that must not run on a caller's thread: refreshing a token ahead of its
 * expiry, and lookups a dialogue script starts and collects later.
 *
 * Threads start lazily and are never joined: the pool lives as long as the
 * process, like the token cache, and idle threads sleep on a condition
 * variable.  The queue is bounded; a full queue is reported to the caller,
 * never waited on.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "worker.h"

#define MAX_THREADS 32

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv;          /* monotonic clock, see init_done_cv */
static pthread_once_t done_once = PTHREAD_ONCE_INIT;
static ecw_job *head, *tail;
static int queued, running, n_threads, idle;
static int max_threads = 4, max_queue = 128;
static _Thread_local ecw_job *current;
static int stopping;                    /* set at process exit */
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
atomic_int ecw_worker_exiting;

static void init_done_cv (void) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&done_cv, &ca);
  pthread_condattr_destroy(&ca);
}

ecw_job *ecw_worker_current (void) {
  return current;
}

static void *worker_main (void *arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  for (;;) {
    ecw_job *j;
    while (head == NULL || stopping) {
      idle++;
      pthread_cond_wait(&work_cv, &lock);
      idle--;
    }
    j = head;
    head = j->next;
    if (head == NULL) tail = NULL;
    queued--;
    running++;
    pthread_mutex_unlock(&lock);

    current = j;
    j->run(j);
    current = NULL;

    pthread_mutex_lock(&lock);
    running--;
    j->done = 1;
    pthread_cond_broadcast(&done_cv);
    if (--j->refs == 0) {
      pthread_mutex_unlock(&lock);
      j->drop(j);
      pthread_mutex_lock(&lock);
    }
  }
  return NULL;
}

/*
 * At process exit, stop taking jobs, make running worker transfers abort
 * (http.c's progress callback) and wait, at most two seconds, until no
 * worker runs a job: then no module thread is inside curl or OpenSSL when
 * OpenSSL's own atexit handler -- registered before ours, so run after it
 * -- frees its tables.  Needed even with the drain on the last state's
 * close: a startup script (ecw_warm.lua) keeps a state open through
 * shutdown.  Touches neither library.
 */
static void quiesce (void) {
  struct timespec ts;
  pthread_mutex_lock(&lock);
  stopping = 1;
  atomic_store(&ecw_worker_exiting, 1);
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += 2;
  while (running > 0)
    if (pthread_cond_timedwait(&done_cv, &lock, &ts) == ETIMEDOUT) break;
  pthread_mutex_unlock(&lock);
}

static void register_quiesce (void) {
  atexit(quiesce);
}

int ecw_worker_submit (ecw_job *j) {
  int start = 0;
  pthread_once(&done_once, init_done_cv);
  pthread_once(&exit_once, register_quiesce);
  pthread_mutex_lock(&lock);
  if (queued >= max_queue || stopping) {
    pthread_mutex_unlock(&lock);
    return 0;
  }
  j->done = 0;
  if (j->urgent && head) {
    j->next = head;
    head = j;
  } else {
    j->next = NULL;
    if (tail) tail->next = j;
    else head = j;
    tail = j;
  }
  queued++;
  if (queued > idle && n_threads < max_threads) {
    n_threads++;
    start = 1;
  }
  pthread_cond_signal(&work_cv);
  pthread_mutex_unlock(&lock);
  if (start) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, worker_main, NULL) != 0) {
      pthread_mutex_lock(&lock);
      n_threads--;
      pthread_mutex_unlock(&lock);
      /* Existing threads (if any) will still take the job; with none, the
       * next submit tries again. */
    }
    pthread_attr_destroy(&attr);
  }
  return 1;
}

void ecw_job_ref (ecw_job *j) {
  pthread_mutex_lock(&lock);
  j->refs++;
  pthread_mutex_unlock(&lock);
}

void ecw_job_unref (ecw_job *j) {
  int last;
  pthread_mutex_lock(&lock);
  last = --j->refs == 0;
  pthread_mutex_unlock(&lock);
  if (last) j->drop(j);
}

int ecw_job_is_done (ecw_job *j) {
  int d;
  pthread_mutex_lock(&lock);
  d = j->done;
  pthread_mutex_unlock(&lock);
  return d;
}

int ecw_job_wait (ecw_job *j, int64_t deadline_ms) {
  int d;
  pthread_once(&done_once, init_done_cv);
  pthread_mutex_lock(&lock);
  while (!j->done)
    if (ecw_cond_wait_until(&done_cv, &lock, deadline_ms) == ETIMEDOUT) break;
  d = j->done;
  pthread_mutex_unlock(&lock);
  return d;
}

int ecw_worker_drain (int64_t deadline_ms) {
  int idle_now;
  pthread_once(&done_once, init_done_cv);
  pthread_mutex_lock(&lock);
  while (queued + running > 0)
    if (ecw_cond_wait_until(&done_cv, &lock, deadline_ms) == ETIMEDOUT) break;
  idle_now = queued + running == 0;
  pthread_mutex_unlock(&lock);
  return idle_now;
}

void ecw_worker_configure (int threads, int queue) {
  pthread_mutex_lock(&lock);
  if (threads > 0) max_threads = threads > MAX_THREADS ? MAX_THREADS : threads;
  if (queue > 0) max_queue = queue;
  pthread_mutex_unlock(&lock);
}

void ecw_worker_counts (int *threads, int *q, int *r) {
  pthread_mutex_lock(&lock);
  *threads = n_threads;
  *q = queued;
  *r = running;
  pthread_mutex_unlock(&lock);
}
