#!/usr/bin/env python3
"""`vufront job`, `vufront snapshot` and `vufront restore` as a user runs
them, for everything that needs no state transfer: jobs across two
vufront-backend devices (activate, check, sleep, barrier, wait, wake, reset),
a failing device releasing a barrier, invalid job files (exit 2, the place in
the file named), unknown sockets (exit 1), a failing snapshot leaving no file
and an existing file untouched, usage errors.

The cases that need the snapshot implementation are in test_snapshot_cli.py.

    test_job.py --vufront build/bin/vufront --backend build/bin/vufront-backend [-k NAME]
"""
import argparse
import json
import os
import pty
import subprocess
import sys

from runner import run_tests
from vubackend import Backends, index_of, job_events, leftovers, run, write_job

ARGS = None


def vufront(*args, timeout=120):
    return run(ARGS.vufront, *args, timeout=timeout)


def test_job_two_devices_lifecycle_with_barriers(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M', '--queues', '2')
        n = bs.start('n', '--device', 'net', '--queues', '2')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock, 'queues': 2, 'msix': True,
             'steps': ['activate', 'check', {'wait': 0.5}, 'sleep', {'barrier': 'asleep'},
                       {'barrier': 'waking'}, 'wake', 'check', 'reset', 'activate', 'check']},
            {'name': 'net0', 'socket': n.sock, 'kind': 'net', 'queues': 2, 'packed': True,
             'steps': ['activate', 'check', 'sleep', {'barrier': 'asleep'}, {'wait': 0.3},
                       {'barrier': 'waking'}, 'wake', 'check', 'reset']}]})
        r = vufront('job', path, '--json-progress')
        assert r.returncode == 0, r.stdout + r.stderr
        events, summary = job_events(r.stdout)
        assert summary['ok'] is True, summary
        assert [d['steps_ok'] for d in summary['devices']] == [11, 9], summary
        assert [d['result'] for d in summary['devices']] == ['ok', 'ok']
        for e in events:
            assert set(e) >= {'device', 'step', 'name', 'event'}, e
            assert e['event'] in ('start', 'done'), e
        # every step started and ended, in order
        for dev, n_steps in (('disk0', 11), ('net0', 9)):
            done = [e['step'] for e in events if e['device'] == dev and e['event'] == 'done']
            assert done == list(range(n_steps)), (dev, done)
        # the barriers held: net0 passed "asleep" only after disk0 slept (disk0
        # waited 0.5 s first), disk0 passed "waking" only after net0's wait
        assert index_of(events, 'net0', 'barrier', 'done', 3) > index_of(events, 'disk0', 'sleep', 'done')
        assert index_of(events, 'disk0', 'barrier', 'done', 5) > index_of(events, 'net0', 'wait', 'done')
        wait = [e for e in events if e['name'] == 'wait' and e['event'] == 'done']
        assert all(e['ms'] >= 300 for e in wait), wait
        checks = [e['detail'] for e in events if e['device'] == 'disk0' and e['name'] == 'check'
                  and e['event'] == 'done']
        # later checks read back what the earlier ones wrote (across sleep and reset)
        assert 'earlier write(s) per queue intact' in checks[-1], checks
        frames = [e['detail'] for e in events if e['device'] == 'net0' and e['name'] == 'check'
                  and e['event'] == 'done']
        assert all('frames echoed' in d for d in frames), frames


def test_job_output_forms(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock, 'steps': ['activate', 'check', 'sleep', 'wake']}]})
        # not a terminal: JSON lines on stdout by default, nothing on stderr
        r = vufront('job', path)
        assert r.returncode == 0, r.stderr
        events, summary = job_events(r.stdout)
        assert len(events) == 8 and summary['devices'][0]['steps'] == 4
        assert r.stderr == '', r.stderr
        # --no-progress: only the summary table, on stderr
        r = vufront('job', path, '--no-progress')
        assert r.returncode == 0 and r.stdout == '', r.stdout
        assert 'disk0' in r.stderr and '4/4' in r.stderr and 'job: ok' in r.stderr, r.stderr
        # the two flags exclude each other
        assert vufront('job', path, '--no-progress', '--json-progress').returncode == 2
        # `vufront job FILE | jq` from a terminal: stdout is a pipe, stderr a
        # terminal; the JSON lines still go to stdout
        leader, follower = pty.openpty()
        try:
            p = subprocess.run([ARGS.vufront, 'job', path], stdout=subprocess.PIPE,
                               stderr=follower, text=True, timeout=120)
        finally:
            os.close(follower)
            os.close(leader)
        assert p.returncode == 0
        events, summary = job_events(p.stdout)
        assert len(events) == 8 and summary['ok'] is True, p.stdout


def test_job_failing_device_releases_barrier_and_names_step(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock,
             'steps': ['activate', 'sleep', {'barrier': 'asleep'}, 'wake', 'check']},
            {'name': 'ghost', 'socket': os.path.join(tmp, 'nobody.sock'), 'timeout': 0.5,
             'steps': ['activate', 'sleep', {'barrier': 'asleep'}, 'wake']}]})
        r = vufront('job', path, '--json-progress')
        assert r.returncode == 1, r.stdout + r.stderr
        events, summary = job_events(r.stdout)
        assert summary['ok'] is False
        disk0, ghost = summary['devices']
        assert disk0['result'] == 'ok' and disk0['steps_ok'] == 5, disk0
        assert ghost['result'] == 'failed' and ghost['failed_step'] == 0, ghost
        assert ghost['failed_name'] == 'activate' and 'no such file' in ghost['error'], ghost
        barrier = events[index_of(events, 'disk0', 'barrier', 'done')]
        assert 'released without ghost (failed at steps[0] activate)' in barrier['detail'], barrier
        assert 'vufront job: ghost: steps[0] activate: ' in r.stderr, r.stderr


def test_job_barrier_timeout_names_who_is_missing(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        b = bs.start('b', '--size', '16M')
        path = write_job(tmp, {'devices': [
            {'name': 'quick', 'socket': a.sock, 'steps': ['activate', {'barrier': 'x', 'timeout': 0.3}]},
            {'name': 'slow', 'socket': b.sock, 'steps': ['activate', {'wait': 1.5}, {'barrier': 'x'}]}]})
        r = vufront('job', path, '--no-progress')
        assert r.returncode == 1, r.stderr
        assert ('vufront job: quick: steps[1] barrier: barrier "x": timeout: still waiting for slow'
                in r.stderr), r.stderr
        # slow was not held up by the device that gave up
        assert 'slow    3/3' in r.stderr, r.stderr


def test_job_invalid_files_exit_2_naming_the_place(tmp):
    cases = [
        ({'devices': [{'socket': '/a', 'steps': ['activate']},
                      {'socket': '/b', 'steps': ['activate', 'check', 'sleep', 'slep']}]},
         'devices[1].steps[3]: unknown step "slep" (did you mean "sleep"?)'),
        ({'devices': [{'socket': '/a', 'steps': ['activate', 'wake']}]},
         'devices[0].steps[1]: "wake" needs a sleeping device; after steps[0] ("activate") it is active'),
        ({'devices': [{'socket': '/a', 'queues': 0, 'steps': ['activate']}]},
         'devices[0].queues: 0 is not in 1..64'),
        ({'devices': [{'socket': '/a', 'steps': ['activate', 'sleep',
                                                 {'snapshot': 'f', 'max_bytes': '1X'}]}]},
         'devices[0].steps[2].max_bytes: unknown unit "X"'),
        ({'devices': [{'name': 'a', 'socket': '/a', 'steps': [{'barrier': 'p'}, {'barrier': 'q'}]},
                      {'name': 'b', 'socket': '/b', 'steps': [{'barrier': 'q'}, {'barrier': 'p'}]}]},
         'barriers would deadlock'),
        ({'disks': []}, 'job file: unknown key "disks"'),
    ]
    for job, message in cases:
        path = write_job(tmp, job)
        r = vufront('job', path)
        assert r.returncode == 2, (job, r.stdout, r.stderr)
        assert r.stderr.startswith('vufront job: %s: ' % path), r.stderr
        assert message in r.stderr, (message, r.stderr)
        assert r.stdout == '', r.stdout
    with open(os.path.join(tmp, 'broken.json'), 'w') as f:
        f.write('{"devices": [\n  {"socket": "/a",, }]}')
    r = vufront('job', os.path.join(tmp, 'broken.json'))
    assert r.returncode == 2 and 'not valid JSON: parse error at line 2' in r.stderr, r.stderr
    r = vufront('job', os.path.join(tmp, 'missing.json'))
    assert r.returncode == 2 and 'cannot open' in r.stderr, r.stderr
    assert vufront('job').returncode == 2
    assert vufront('job', '--help').returncode == 0


def job_killing_its_backend_during_wait(tmp, bs, reconnect):
    """Runs a job on one disk (file-backed, so a restart keeps its data) whose
    back-end is SIGKILLed during the job's wait step and, with `reconnect`,
    restarted on the same socket. Returns (exit code, events, summary)."""
    img = os.path.join(tmp, 'disk.img')
    args = ('--image', img, '--size', '16M', '--queues', '2')
    a = bs.start('a', *args)
    device = {'name': 'disk0', 'socket': a.sock, 'queues': 2, 'timeout': 600,
              'steps': ['activate', 'check', {'wait': 2}, 'check', 'sleep', 'wake', 'check']}
    if not reconnect:
        device['reconnect'] = False
    path = write_job(tmp, {'devices': [device]})
    p = subprocess.Popen([ARGS.vufront, 'job', path, '--json-progress'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stdout:  # until the wait step starts
            lines.append(line)
            e = json.loads(line)
            if e.get('name') == 'wait' and e.get('event') == 'start':
                break
        a.proc.kill()
        a.proc.wait(10)
        if reconnect:
            bs.start('a', *args)  # the same socket and disk image
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    events, summary = job_events(''.join(lines) + out)
    return p.returncode, events, summary, err


def test_job_reconnects_to_a_restarted_backend_and_keeps_its_data(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        rc, events, summary, err = job_killing_its_backend_during_wait(tmp, bs, True)
        assert rc == 0, (events, err)
        checks = [e['detail'] for e in events if e['name'] == 'check' and e['event'] == 'done']
        assert len(checks) == 3, checks
        # the steps after the restart show the loss and the resume, and the
        # data written before the crash is intact
        after = ' '.join(e.get('detail', '') for e in events[index_of(events, 'disk0', 'wait', 'done'):])
        assert 'backend_lost: ' in after and 'resumed: ' in after, after
        assert '1 earlier write(s) per queue intact' in checks[1], checks[1]
        assert '2 earlier write(s) per queue intact' in checks[2], checks[2]
        assert summary['ok'] is True, summary


def test_job_without_reconnect_fails_the_next_step_naming_the_loss(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        rc, events, summary, err = job_killing_its_backend_during_wait(tmp, bs, False)
        assert rc == 1, (events, err)
        failed = [e for e in events if e['event'] == 'failed']
        assert len(failed) == 1 and failed[0]['name'] == 'check' and failed[0]['step'] == 3, failed
        assert 'the back-end was lost' in failed[0]['error'], failed
        assert 'disk0: steps[3] check' in err and 'the back-end was lost' in err, err


def test_job_reconnect_keys_are_checked(tmp):
    for device, said in (({'reconnect': 'yes'}, 'reconnect'),
                         ({'reconnect': False, 'reconnect_give_up': 5}, 'do not apply'),
                         ({'reconnect_max_delay': 0}, 'reconnect_max_delay')):
        d = {'socket': os.path.join(tmp, 's.sock'), 'steps': ['activate']}
        d.update(device)
        path = write_job(tmp, {'devices': [d]})
        r = vufront('job', path)
        assert r.returncode == 2 and said in r.stderr, (device, r.stderr)


def test_snapshot_and_restore_unknown_socket_exit_1(tmp):
    sock = os.path.join(tmp, 'nobody.sock')
    out = os.path.join(tmp, 's.vfsnap')
    r = vufront('snapshot', sock, '--out', out, '--timeout', '0.3')
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('vufront snapshot: connect ' + sock), r.stderr
    assert 'not_found: no such file' in lines[0], lines[0]
    assert not os.path.exists(out) and leftovers(tmp) == []
    r = vufront('snapshot', sock, '--out', out, '--timeout', '0.3', '--json')
    assert r.returncode == 1
    j = json.loads(r.stdout)
    assert j['ok'] is False and j['step'] == 'negotiate' and 'no such file' in j['error'], j
    # restore checks the file before it connects: not a snapshot
    notsnap = os.path.join(tmp, 'not.vfsnap')
    with open(notsnap, 'w') as f:
        f.write('hello')
    r = vufront('restore', sock, '--in', notsnap, '--timeout', '0.3')
    assert r.returncode == 1 and 'vufront restore: %s: ' % notsnap in r.stderr, r.stderr


def test_snapshot_failure_leaves_no_file_and_keeps_an_existing_one(tmp):
    # The back-end drops the connection at its first and second
    # SET_DEVICE_STATE_FD, so both snapshots fail after negotiation (with or
    # without the transfer code).
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M', '--close-at', 'SET_DEVICE_STATE_FD:1',
                     '--close-at', 'SET_DEVICE_STATE_FD:2')
        out = os.path.join(tmp, 'new.vfsnap')
        r = vufront('snapshot', a.sock, '--out', out)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith('vufront snapshot: '), r.stderr
        assert r.stdout == ''
        assert not os.path.exists(out)
        old = os.path.join(tmp, 'old.vfsnap')
        with open(old, 'wb') as f:
            f.write(b'the previous snapshot')
        r = vufront('snapshot', a.sock, '--out', old, '--force')
        assert r.returncode == 1, r.stderr
        with open(old, 'rb') as f:
            assert f.read() == b'the previous snapshot'
        assert leftovers(tmp) == [], os.listdir(tmp)


def test_snapshot_restore_usage_errors_exit_2(tmp):
    sock = os.path.join(tmp, 'nobody.sock')
    out = os.path.join(tmp, 's.vfsnap')
    for args in (['snapshot', sock],                                  # no --out
                 ['snapshot', '--out', out],                          # no socket
                 ['snapshot', sock, '--out', out, '--max-bytes', '12Q'],
                 ['snapshot', sock, '--out', out, '--max-bytes', '0'],
                 ['snapshot', sock, '--out', out, '--device', 'gpu'],
                 ['snapshot', sock, '--out', out, '--timeout', '0'],
                 ['snapshot', sock, '--out', tmp],                    # a directory
                 ['snapshot', sock, '--out', os.path.join(tmp, 'no', 'dir', 'x')],
                 ['restore', sock],                                   # no --in
                 ['restore', sock, '--in', os.path.join(tmp, 'missing.vfsnap')],
                 ['restore', sock, '--in', out, '--bogus']):
        r = vufront(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert not os.path.exists(out)
    for cmd in ('snapshot', 'restore', 'job'):
        r = vufront(cmd, '--help')
        assert r.returncode == 0 and cmd in r.stdout, r.stdout
    assert 'snapshot' in vufront('--help').stdout


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-job-')


if __name__ == '__main__':
    sys.exit(main())
