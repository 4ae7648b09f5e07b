"""Group commit (gpufs/group_commit.py): single reports arriving while a write runs are written
together in the next one, each answered after its own commit, never half-written, each judged by
its own key. Grouping is forced, not hoped for: the first write is held in PostgreSQL on the
client lock that report-clients takes, until the others are seen waiting."""
import threading
import time

import psycopg2
import pytest

from gpufs import create_app
from gpufs.errors import Unavailable
from gpufs.group_commit import GroupCommit

from .conftest import new_client_id, now, register
from .reports import report
from .test_auth import create_key

LOCK = "select pg_advisory_lock(7354, ('x' || left(%(c)s, 8))::bit(32)::integer)"
UNLOCK = "select pg_advisory_unlock(7354, ('x' || left(%(c)s, 8))::bit(32)::integer)"


def until(condition, what):
    """Wait for a condition another thread brings about; fails (never hangs) if it never comes."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def in_threads(calls):
    """Start each call in a thread of its own, in order, each after the previous one is waiting or
    writing; returns (threads, results by position)."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as err:  # noqa: BLE001 (the test looks at what each caller got)
            results[i] = err

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    return threads, results


# ---- the mechanism, with a write the test controls ----------------------------------------------

class Writes:
    """A write that records its groups; the first one waits for `release`."""

    def __init__(self, fail=()):
        self.groups, self.release, self.fail = [], threading.Event(), set(fail)

    def __call__(self, items):
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.release.wait(60)
        if self.fail & set(items):
            raise ValueError(f"cannot write {sorted(self.fail & set(items))}")
        return [f"stored {item}" for item in items]


def start_group(gc, writes, items):
    """Submit items[0] (it writes alone and is held), then the rest (they wait); release the first."""
    threads, results = in_threads([lambda item=item: gc.submit(item) for item in items])
    threads[0].start()
    until(lambda: len(writes.groups) == 1, "the first write started")
    for n, thread in enumerate(threads[1:], 1):
        thread.start()
        until(lambda n=n: gc.waiting == n, f"{n} reports waiting")
    writes.release.set()
    for thread in threads:
        thread.join(60)
    return results


def test_reports_arriving_during_a_write_go_together_in_the_next():
    writes = Writes()
    gc = GroupCommit(writes)
    results = start_group(gc, writes, ["a", "b", "c", "d"])
    assert writes.groups == [["a"], ["b", "c", "d"]]
    assert results == ["stored a", "stored b", "stored c", "stored d"]
    assert gc.waiting == 0
    assert gc.submit("e") == "stored e"  # idle again: written at once, alone
    assert writes.groups[-1] == ["e"]


def test_a_group_is_at_most_limit_reports():
    writes = Writes()
    gc = GroupCommit(writes, limit=2)
    results = start_group(gc, writes, ["a", "b", "c", "d", "e"])
    assert writes.groups == [["a"], ["b", "c"], ["d", "e"]]
    assert results == [f"stored {x}" for x in "abcde"]


def test_a_report_that_breaks_the_write_fails_alone():
    writes = Writes(fail={"c"})
    gc = GroupCommit(writes)
    results = start_group(gc, writes, ["a", "b", "c", "d"])
    assert writes.groups == [["a"], ["b", "c", "d"], ["b"], ["c"], ["d"]]
    assert results[:2] == ["stored a", "stored b"] and results[3] == "stored d"
    assert isinstance(results[2], RuntimeError) and isinstance(results[2].__cause__, ValueError)


def test_a_lost_database_fails_the_whole_group_as_unavailable():
    writes = Writes()

    def write(items):
        result = writes(items)
        if len(items) > 1:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return result

    gc = GroupCommit(write)
    results = start_group(gc, writes, ["a", "b", "c"])
    assert results[0] == "stored a"
    # b led the failed write: its own thread gets the driver's error (its teardown drops the
    # connection); c waited for it and gets the 503 of an unreachable database.
    assert isinstance(results[1], psycopg2.OperationalError)
    assert isinstance(results[2], Unavailable)


# ---- through the API, on real PostgreSQL ---------------------------------------------------------

def post(app, body, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = app.test_client().post("/api/client/heartbeat", json=body, headers=headers)
    return resp.status_code, resp.get_json()


def stored(db, client_id):
    with db.cursor() as cur:
        cur.execute("select count(*) from heartbeat where client_id = decode(%s, 'hex')", (client_id,))
        return cur.fetchone()[0]


def held_group(app, db, first_client, calls):
    """Run calls[0] (a report of `first_client`) while the test holds that client's lock, so its write
    waits in PostgreSQL; start the other calls, wait until they are queued, then let go."""
    gc = app.extensions["gpufs"].reports
    threads, results = in_threads(calls)
    with db.cursor() as cur:
        cur.execute(LOCK, {"c": first_client})
        threads[0].start()
        until(lambda: _waits_on_lock(db), "the first report's write waits on the client lock")
        for n, thread in enumerate(threads[1:], 1):
            thread.start()
            until(lambda n=n: gc.waiting == n, f"{n} reports waiting")
        cur.execute(UNLOCK, {"c": first_client})
    for thread in threads:
        thread.join(60)
    return results


def _waits_on_lock(db):
    with db.cursor() as cur:
        cur.execute("select count(*) from pg_locks where locktype = 'advisory' and not granted")
        return cur.fetchone()[0] > 0


def test_concurrent_single_reports_are_stored_each_answered_after_its_commit(app, client, db):
    a, b, c = (register(client, client_id=new_client_id(), name=f"m{i}") for i in range(3))
    unknown = new_client_id()
    t = now().replace(microsecond=0)

    def send_and_look(cid, ts):
        status, body = post(app, report(cid, ts))
        # The moment the answer is there, another connection sees the report: it was committed.
        return status, body, stored(db, cid) if status == 200 else None

    results = held_group(app, db, a, [
        lambda: send_and_look(a, t), lambda: send_and_look(b, t), lambda: send_and_look(unknown, t),
        lambda: send_and_look(c, t), lambda: send_and_look(b, t)])  # b twice: a retry in the same group
    statuses = [r[0] for r in results]
    assert statuses == [200, 200, 404, 200, 200]
    assert [r[2] for r in results] == [1, 1, None, 1, 1]
    # The retry of b in the same group is stored once: one of the two is the duplicate.
    assert sorted(r[1]["data"]["status"] for r in (results[1], results[4])) == ["duplicate", "stored"]
    assert results[2][1]["message"].startswith("client_id: no such client")
    assert stored(db, b) == 1 and stored(db, unknown) == 0


def test_each_report_of_a_group_is_judged_by_its_own_key(app_config, db):
    app = create_app({**app_config, "AUTH_MODE": "token"})
    app.extensions["gpufs"].clock = now
    try:
        admin = create_key(app, "--user", "1", "--admin")[1]
        own, other = create_key(app, "--user", "12")[1], create_key(app, "--user", "13")[1]
        ours, theirs = new_client_id(), new_client_id()
        for cid, user in ((ours, "12"), (theirs, "13")):
            resp = app.test_client().post("/api/user/insert_client", headers={"Authorization": f"Bearer {admin}"},
                                          json={"user_id": user, "client_id": cid, "client_status": "online",
                                                "name": cid[:6]})
            assert resp.status_code == 200, resp.get_json()
        t = now().replace(microsecond=0)
        # The second group's write runs on the thread of the report sent with user 12's key: that key
        # is refused for 13's client, and 13's own report in the same group is accepted.
        results = held_group(app, db, theirs, [
            lambda: post(app, report(theirs, t), other),
            lambda: post(app, report(theirs, t.replace(second=(t.second + 1) % 60)), own),
            lambda: post(app, report(ours, t), own),
            lambda: post(app, report(theirs, t.replace(second=(t.second + 2) % 60)), other)])
        assert [status for status, _ in results] == [200, 404, 200, 200]
        assert stored(db, theirs) == 2 and stored(db, ours) == 1
    finally:
        app.extensions["gpufs"].close()


def test_a_report_that_fails_in_postgresql_fails_alone(app, client, db):
    """A write error that validation did not foresee (here a trigger) fails its own report; the
    others of its group are stored. Nothing of the failed one is half-written."""
    a, b, bad = (register(client, client_id=new_client_id(), name=f"m{i}") for i in range(3))
    with db.cursor() as cur:
        cur.execute("""create or replace function gpufs_test_refuse() returns trigger language plpgsql as $$
                       begin raise exception 'refused by the test'; end $$""")
        cur.execute("create trigger refuse before insert on heartbeat for each row "
                    "when (new.client_id = decode(%s, 'hex')) execute function gpufs_test_refuse()", (bad,))
    try:
        t = now().replace(microsecond=0)
        results = held_group(app, db, a, [lambda: post(app, report(a, t)), lambda: post(app, report(b, t)),
                                          lambda: post(app, report(bad, t))])
    finally:
        with db.cursor() as cur:
            cur.execute("drop trigger refuse on heartbeat; drop function gpufs_test_refuse()")
    assert [status for status, _ in results] == [200, 200, 500]
    assert "refused by the test" not in str(results[2][1])  # no SQL or database message to the client
    assert stored(db, a) == 1 and stored(db, b) == 1 and stored(db, bad) == 0
    with db.cursor() as cur:
        cur.execute("select count(*) from system_info where client_id = decode(%s, 'hex')", (bad,))
        assert cur.fetchone()[0] == 0


@pytest.mark.parametrize("n", [8])
def test_many_threads_at_once_every_answer_matches_the_database(app, client, db, n):
    """No control over timing: whatever groups form, every 200 is a stored report and each answer
    is the one for its own report."""
    cids = [register(client, client_id=new_client_id(), name=f"m{i}") for i in range(n)]
    t = now().replace(microsecond=0)
    threads, results = in_threads([lambda cid=cid: post(app, report(cid, t)) for cid in cids] * 2)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(status == 200 for status, _ in results)
    for i, cid in enumerate(cids):
        outcomes = sorted(results[j][1]["data"]["status"] for j in (i, i + n))
        assert outcomes == ["duplicate", "stored"]
        assert stored(db, cid) == 1
