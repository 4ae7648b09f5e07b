"""Periodic tasks: one leader across processes, taken over when the leader's session ends."""
from gpufs.tasks import Leader, Task


def test_tasks_run_on_exactly_one_leader_and_pass_over_when_it_goes(urls):
    runs = []
    first = Leader(urls["DATABASE_URL"], [Task("t", 3600, lambda conn, now: runs.append("first"))])
    second = Leader(urls["DATABASE_URL"], [Task("t", 3600, lambda conn, now: runs.append("second"))])
    try:
        assert first.step() is True
        assert second.step() is False
        assert first.step() is True  # leading still, but the task is not due again for an hour
        assert runs == ["first"]
        first.stop()  # its session ends, and the lock with it
        assert second.step() is True
        assert runs == ["first", "second"]
    finally:
        first.stop()
        second.stop()


def test_a_failing_task_does_not_stop_the_others(urls):
    runs = []

    def broken(conn, now):
        with conn, conn.cursor() as cur:
            cur.execute("select 1/0")

    leader = Leader(urls["DATABASE_URL"], [Task("broken", 60, broken),
                                            Task("fine", 60, lambda conn, now: runs.append(now))])
    try:
        assert leader.step() is True
        assert len(runs) == 1 and runs[0].tzinfo is not None
    finally:
        leader.stop()
