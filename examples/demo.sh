#!/bin/sh
# The tour: run the C counterparts of the seed programs in a sensible order,
# one heading a program.  Usage: examples/demo.sh BUILD_DIR
set -u
dir="${1:-build}/examples"
[ -d "$dir" ] || { echo "demo: no $dir; run make first" >&2; exit 1; }
failed=0
show() {
    prog="$1"
    shift
    [ -x "$dir/$prog" ] || return 0   # not built yet (module pending)
    printf '\n=== %s — %s\n' "$prog" "$*"
    if ! timeout 60 "$dir/$prog"; then
        echo "demo: $prog failed" >&2
        failed=1
    fi
}

show s000_pool_map_speed   "seed 000/1: pool.map over 10 workers vs a serial map"
show readme_example        "README: fork a process, share a value, join"
show s000_parent_child     "seed 000/2: a child and its parent (pid, ppid)"
show s000_process_memory   "seed 000/3: processes do not share memory, threads do"
show s000_value_array      "seed 000/5: share memory with Value and Array"
show s002_start_join       "seed 002/2: start two processes, join them"
show s002_process_subclass "seed 002/2: a result stored in the child stays in the child"
show s001_two_processes    "seed 001: two processes print side by side (three rounds)"
show s004_process_hello    "seed 004/1.2.1: a process says hello; the parent joins it"
show s004_process_info     "seed 004/1.2.1: parent and child process ids"
show s004_value_array      "seed 004/1.2.2: two processes share a Value and an Array"
show s004_lock_print       "seed 004/1.2.2: ten processes print under one Lock"
show s000_queue_put        "seed 000/4: five processes put into one Queue"
show s001_queue_pipeline   "seed 001: a bounded Queue between a producer and a consumer"
show s002_queue_results    "seed 002/3: processes hand results back through a Queue"
show s004_queue_kinds      "seed 004/1.1.8: FIFO, LIFO and priority queues"
show s004_queue_process    "seed 004/Queues: a child puts a record, the parent gets it"
show s002_pipe_results     "seed 002/4: three processes send results on one end of a Pipe"
show s004_pipe_process     "seed 004/Pipes: a child sends a record through a Pipe"
show s004_thread_direct    "seed 004/1.1.1: ten threads; exit waits for them"
show s004_thread_subclass  "seed 004/1.1.1: a thread object with its own run function"
show s004_join_daemon      "seed 004/1.1.2: join with a timeout, a daemon thread"
show s004_thread_no_lock   "seed 004/1.1.3: ten threads bump a counter without a lock (atomic)"
show s004_rlock_threads    "seed 004/1.1.3: ten threads count under an RLock"
show s004_semaphore_threads "seed 004/1.1.4: twenty threads, five at a time (BoundedSemaphore)"
show s004_producer_consumer "seed 004/producer-consumer: random producer and consumer on a queue"
show s004_bones_joinable   "seed 004/producer-consumer: task_done and join on a queue"
if [ -x "$dir/pipeline_worker_dies" ]; then
    printf '\n=== %s — %s\n' pipeline_worker_dies \
        "a JoinableQueue pipeline whose worker is killed: join reports it, no hang"
    timeout 60 "$dir/pipeline_worker_dies" 2>&1
    [ $? -eq 1 ] || { echo "demo: pipeline_worker_dies did not end with its error" >&2; failed=1; }
fi
show s004_event_traffic_light "seed 004/1.1.5: a traffic light (Event) and three cars"
show s004_event_door       "seed 004/1.1.5: a door opened by swiping a card (Event)"
show s004_condition_notify "seed 004/1.1.6: notify n of ten threads waiting on a Condition"
show s004_timer            "seed 004/1.1.7: a Timer says hello after a second"
show s004_manager          "seed 004/Manager: ten processes share a dict and a list"
show s000_pool_apply_async "seed 000/6: apply_async on a pool of four, then every get"
show s001_pool_workers     "seed 001: a pool of three runs ten tasks; close, then join"
show s002_pool_map_imap    "seed 002/5: map returns a list, imap an iterator"
show s002_pool_get_timeout "seed 002/5: apply_async results collected with get(timeout)"
show s003_pool_vs_process  "seed 003/2: a thousand jobs on a pool vs a thousand processes"
show s003_pool_apply_sync  "seed 003/2: apply waits for each task (synchronous)"
show s003_pool_apply_async "seed 003/2: apply_async, close, join, then get"
show s003_pool_callback    "seed 003/3: callbacks run in the parent process"
show s003_pool_collect     "seed 003/4: wait for all, then gather the results"
show s003_pool_chat_server "seed 003/2: a pool of four serves six socket clients (pre-fork: mp_pool_serve)"
show s004_pool_callback    "seed 004/进程池: a hundred tasks, a callback for each"
show s004_thread_pool      "seed 004/1.1.9: a thread pool, the same API on threads"
show s004_coroutine_producer_consumer "seed 004/6 协程: a producer and a consumer coroutine"
show co_crawler            "coroutines: fetch six pages at once, each with a timeout"
show co_echo_server        "coroutines: one thread serves 10,000 clients at once"

# MPI pools, when mpirun is here: the same pool.map over eleven ranks.
if command -v mpirun >/dev/null 2>&1 && [ -x "$dir/mpi_pool_map_speed" ]; then
    printf '\n=== %s — %s\n' mpi_pool_map_speed "seed 000/1 over MPI: mpirun -n 11, ten worker ranks"
    run_mpi() {
        OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
            timeout 60 mpirun -n 11 --oversubscribe "$dir/mpi_pool_map_speed"
    }
    # Known open problem: now and then (2 of 5 CI runs, never in 22 runs
    # by hand) this job prints the right result and then mpirun ends with
    # a non-zero status.  Say so, and run it once more.
    run_mpi
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "demo: mpi_pool_map_speed ended with status $status; once more" >&2
        if ! run_mpi; then
            echo "demo: mpi_pool_map_speed failed" >&2
            failed=1
        fi
    fi
fi

exit $failed
