/* worker.h: the module's bounded pool of worker threads. */
#ifndef ECW_WORKER_H
#define ECW_WORKER_H

#include <stdatomic.h>
#include "ecw.h"

typedef struct ecw_job ecw_job;
typedef void (*ecw_job_fn) (ecw_job *j);

struct ecw_job {
  ecw_job_fn run;            /* runs on a worker thread */
  ecw_job_fn drop;           /* frees the job when its last reference goes */
  int refs;                  /* guarded by the pool lock */
  int done;                  /* guarded by the pool lock */
  atomic_int cancelled;
  int urgent;                /* token refreshes jump the queue */
  struct ecw_job *next;
};

/* Queue j (its refs must already count the worker's reference).  Returns 0
 * when the queue is full: the caller still owns every reference. */
ECW_LOCAL int ecw_worker_submit (ecw_job *j);

/* Mark j done (called by run's caller, the worker) and wake waiters. */
ECW_LOCAL void ecw_job_unref (ecw_job *j);
ECW_LOCAL void ecw_job_ref (ecw_job *j);
/* Wait until j is done or deadline passes; 1 when done. */
ECW_LOCAL int ecw_job_wait (ecw_job *j, int64_t deadline_ms);
ECW_LOCAL int ecw_job_is_done (ecw_job *j);

/* Wait until no job is queued or running, or the deadline passes; 1 when
 * idle.  Used when the last Lua state closes, so that no module thread is
 * inside libcurl when the host goes on to curl_global_cleanup. */
ECW_LOCAL int ecw_worker_drain (int64_t deadline_ms);

ECW_LOCAL void ecw_worker_configure (int threads, int queue);
ECW_LOCAL void ecw_worker_counts (int *threads, int *queued, int *running);

/* The job the calling worker thread is running (for cancellation checks in
 * long transfers), or NULL on other threads. */
ECW_LOCAL ecw_job *ecw_worker_current (void);

/* Set once the process is exiting: worker transfers abort. */
ECW_LOCAL extern atomic_int ecw_worker_exiting;

#endif
