#!/usr/bin/env python3
"""`vufront snapshot`, `vufront restore` and `vufront job` with real state
transfers between vufront-backend processes: a snapshot restored into a new
back-end gives the same state checksum when saved again, a disk moved to a
new back-end in the middle of its I/O keeps its data and its rings, a
consistent snapshot of two disks with barriers, and the errors a user sees
(the request that failed named, no file left behind, a corrupt file refused,
Ctrl-C). These need the device's snapshot/restore implementation; the rest of
the commands is tested by test_job.py.

    test_snapshot_cli.py --vufront build/bin/vufront --backend build/bin/vufront-backend [-k NAME]
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys

from runner import run_tests
from vubackend import Backends, index_of, job_events, leftovers, run, write_job

ARGS = None


def vufront(*args, timeout=120):
    return run(ARGS.vufront, *args, timeout=timeout)


def snapshot_json(sock, out, *args):
    r = vufront('snapshot', sock, '--out', out, '--json', *args)
    assert r.returncode == 0, r.stdout + r.stderr
    j = json.loads(r.stdout)
    assert j['ok'] is True and j['path'] == out, j
    assert re.fullmatch('[0-9a-f]{16}', j['checksum']), j
    return j


def test_snapshot_restore_round_trip_gives_the_same_checksum(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M', '--queues', '2')
        b = bs.start('b', '--size', '16M', '--queues', '2')
        c = bs.start('c', '--size', '16M', '--queues', '2')
        # data on a's disk first
        r = vufront('check', a.sock, '--queues', '2')
        assert r.returncode == 0, r.stdout
        s1 = os.path.join(tmp, 's1.vfsnap')
        j1 = snapshot_json(a.sock, s1)
        assert j1['state_bytes'] > 16 << 20, j1   # the disk and a header
        assert j1['device'] == 'blk' and j1['socket'] == a.sock
        with open(s1, 'rb') as f:
            assert f.read(8) == b'VUFSNAP\0'
        # the text form
        r = vufront('snapshot', a.sock, '--out', os.path.join(tmp, 's1b.vfsnap'))
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r'snapshot of \S+ \(blk\) saved to \S+: [0-9.]+ [KMG]iB of state, '
                            r'checksum [0-9a-f]{16}, [0-9.]+ m?s, [0-9.]+ [KMG]iB/s\n', r.stdout), r.stdout
        # restore into a fresh back-end, save that one again: the same state
        r = vufront('restore', b.sock, '--in', s1, '--json')
        assert r.returncode == 0, r.stdout + r.stderr
        jr = json.loads(r.stdout)
        assert jr['ok'] is True and jr['checksum'] == j1['checksum'], jr
        assert jr['state_bytes'] == j1['state_bytes']
        r = vufront('restore', b.sock, '--in', s1, '--device', 'blk')
        assert r.returncode == 0 and r.stdout.startswith('restored %s (blk) into %s: ' % (s1, b.sock)), r.stdout
        j2 = snapshot_json(b.sock, os.path.join(tmp, 's2.vfsnap'))
        assert j2['checksum'] == j1['checksum'], (j1, j2)
        # a back-end that never got the data differs
        j3 = snapshot_json(c.sock, os.path.join(tmp, 's3.vfsnap'))
        assert j3['checksum'] != j1['checksum']
        assert leftovers(tmp) == []


def test_net_device_round_trip(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--device', 'net', '--queues', '2')
        b = bs.start('b', '--device', 'net', '--queues', '2')
        s = os.path.join(tmp, 'n.vfsnap')
        j1 = snapshot_json(a.sock, s, '--device', 'net')
        assert j1['device'] == 'net'
        r = vufront('restore', b.sock, '--in', s)   # the kind comes from the file
        assert r.returncode == 0, r.stderr
        assert snapshot_json(b.sock, os.path.join(tmp, 'n2.vfsnap'), '--device', 'net')['checksum'] == j1['checksum']


def test_snapshot_and_restore_errors(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        big = bs.start('big', '--size', '32M')
        closing = bs.start('closing', '--size', '16M', '--close-at', 'SET_DEVICE_STATE_FD')
        s = os.path.join(tmp, 's.vfsnap')
        # the request that failed is named
        r = vufront('snapshot', closing.sock, '--out', s)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith('vufront snapshot: ') and 'SET_DEVICE_STATE_FD' in r.stderr, r.stderr
        assert not os.path.exists(s)
        # too much state for --max-bytes: nothing written
        r = vufront('snapshot', a.sock, '--out', s, '--max-bytes', '1M')
        assert r.returncode == 1 and 'oversized' in r.stderr, r.stderr
        assert not os.path.exists(s) and leftovers(tmp) == []
        snapshot_json(a.sock, s)
        # --device contradicting the file is a usage error
        r = vufront('restore', a.sock, '--in', s, '--device', 'net')
        assert r.returncode == 2 and 'holds a blk snapshot' in r.stderr, r.stderr
        # a back-end of another size refuses the state
        r = vufront('restore', big.sock, '--in', s)
        assert r.returncode == 1 and r.stderr.startswith('vufront restore: '), r.stderr
        # a corrupt file is refused before anything is sent
        bad = os.path.join(tmp, 'bad.vfsnap')
        with open(s, 'rb') as f:
            data = bytearray(f.read())
        data[-100] ^= 0xff
        with open(bad, 'wb') as f:
            f.write(bytes(data))
        r = vufront('restore', a.sock, '--in', bad)
        assert r.returncode == 1 and 'checksum mismatch' in r.stderr, r.stderr


def test_a_stalled_transfer_fails_after_timeout_seconds_without_progress(tmp):
    """--timeout is the time without progress, and the error says so; a
    restore into a back-end that stops reading fails the same way."""
    with Backends(ARGS.backend, tmp) as bs:
        stalls = bs.start('stalls', '--size', '8M', '--state-stall-after', '1M')
        s = os.path.join(tmp, 's.vfsnap')
        r = vufront('snapshot', stalls.sock, '--out', s, '--timeout', '0.5')
        assert r.returncode == 1, r.stderr
        assert "the back-end's state stream: no byte moved for 0.5 s" in r.stderr, r.stderr
        assert not os.path.exists(s) and leftovers(tmp) == []
        good = bs.start('good', '--size', '8M')
        snapshot_json(good.sock, s)
        r = vufront('restore', stalls.sock, '--in', s, '--timeout', '0.5')
        assert r.returncode == 1, r.stderr
        assert "the back-end's reading of the state: no byte moved for 0.5 s" in r.stderr, r.stderr
        assert 'snapshot' in vufront('snapshot', '--help').stdout
        assert 'no byte of state moved' in vufront('snapshot', '--help').stdout


def test_an_existing_snapshot_file_is_replaced_only_with_force(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        s = os.path.join(tmp, 's.vfsnap')
        with open(s, 'wb') as f:
            f.write(b'an older snapshot')
        # refused before anything starts: exit 2, the file as it was
        r = vufront('snapshot', a.sock, '--out', s)
        assert r.returncode == 2, r.stdout + r.stderr
        assert 'exists' in r.stderr and '--force' in r.stderr, r.stderr
        with open(s, 'rb') as f:
            assert f.read() == b'an older snapshot'
        # --force replaces it with a complete snapshot
        snapshot_json(a.sock, s, '--force')
        with open(s, 'rb') as f:
            assert f.read(8) == b'VUFSNAP\0'
        # a job: refused at validation, naming the step; "force": true replaces
        steps = ['activate', 'sleep', {'snapshot': s}]
        path = write_job(tmp, {'devices': [{'name': 'd', 'socket': a.sock, 'steps': steps}]})
        r = vufront('job', path, '--no-progress')
        assert r.returncode == 2, r.stdout + r.stderr
        assert 'devices[0].steps[2]' in r.stderr and '"force": true' in r.stderr, r.stderr
        twice = write_job(tmp, {'devices': [{'name': 'd', 'socket': a.sock, 'steps': [
            'activate', 'sleep', {'snapshot': s + '2'}, {'snapshot': s + '2'}]}]}, 'twice.json')
        r = vufront('job', twice, '--no-progress')
        assert r.returncode == 2 and 'steps[2] writes' in r.stderr, r.stderr
        steps[2] = {'snapshot': s, 'force': True}
        path = write_job(tmp, {'devices': [{'name': 'd', 'socket': a.sock, 'steps': steps}]})
        r = vufront('job', path, '--no-progress')
        assert r.returncode == 0, r.stdout + r.stderr
        b = bs.start('b', '--size', '16M')  # the replaced file is a whole snapshot: it loads
        r = vufront('restore', b.sock, '--in', s, '--json')
        assert r.returncode == 0 and json.loads(r.stdout)['ok'] is True, r.stdout + r.stderr
        assert leftovers(tmp) == [], os.listdir(tmp)


def interrupted_snapshot(backend, out, held):
    """`vufront snapshot` of `backend` into `out`, sent a Ctrl-C once the
    back-end logs that it holds its answer to `held` (its --delay-reply);
    returns (exit code, stdout, stderr)."""
    p = subprocess.Popen([ARGS.vufront, 'snapshot', backend.sock, '--out', out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        backend.wait_log('--delay-reply ' + held, timeout=60)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, stdout, stderr


def test_snapshot_cancelled_by_ctrl_c_leaves_no_file(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '64M', '--delay-reply', 'SET_DEVICE_STATE_FD:2000')
        out = os.path.join(tmp, 's.vfsnap')
        code, stdout, stderr = interrupted_snapshot(a, out, 'SET_DEVICE_STATE_FD')  # while it runs
        assert code == 130, (stdout, stderr)
        assert 'cancelled' in stderr.strip().splitlines()[-1], stderr
        assert not os.path.exists(out) and leftovers(tmp) == []


def test_snapshot_interrupted_while_connecting_transfers_nothing(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--delay-reply', 'GET_FEATURES:1500')
        out = os.path.join(tmp, 's.vfsnap')
        code, stdout, stderr = interrupted_snapshot(a, out, 'GET_FEATURES')
        assert code == 130, (stdout, stderr)
        assert 'cancelled before the transfer began' in stderr.strip().splitlines()[-1], stderr
        assert not a.log.has('SET_DEVICE_STATE_FD'), a.log
        assert not os.path.exists(out) and leftovers(tmp) == []


def test_job_moves_a_disk_to_a_new_backend(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M', '--queues', '2')
        b = bs.start('b', '--size', '16M', '--queues', '2')
        s = os.path.join(tmp, 'disk0.vfsnap')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock, 'queues': 2,
             'steps': ['activate', 'check', 'sleep', 'wake', 'check', 'sleep',
                       {'snapshot': s, 'max_bytes': '64M'},
                       {'restore': s, 'socket': b.sock},
                       'wake', 'check', 'check', 'reset', 'activate', 'check']}]})
        r = vufront('job', path, '--json-progress')
        assert r.returncode == 0, r.stdout + r.stderr
        events, summary = job_events(r.stdout)
        snap = events[index_of(events, 'disk0', 'snapshot', 'done')]
        rest = events[index_of(events, 'disk0', 'restore', 'done')]
        assert snap['bytes'] > 16 << 20 and rest['bytes'] == snap['bytes'], (snap, rest)
        assert b.sock in rest['detail'] and 'sleeping, rings at' in rest['detail'], rest
        checks = [e['detail'] for e in events if e['name'] == 'check' and e['event'] == 'done']
        # on b: what was written on a (two rounds) is there, and I/O goes on
        assert '2 earlier write(s) per queue intact' in checks[2], checks
        assert '4 earlier write(s) per queue intact' in checks[4], checks
        assert summary['devices'][0]['state_bytes'] == 2 * snap['bytes']
        # the device really lives on b now: b's disk has the data a's had
        j_b = snapshot_json(b.sock, os.path.join(tmp, 'b.vfsnap'))
        assert j_b['state_bytes'] == snap['bytes']


def test_job_consistent_snapshot_of_two_disks(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        c = bs.start('c', '--size', '16M', '--queues', '2')
        b = bs.start('b', '--size', '16M')
        d = bs.start('d', '--size', '16M', '--queues', '2')
        s0, s1 = os.path.join(tmp, 'd0.vfsnap'), os.path.join(tmp, 'd1.vfsnap')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock,
             'steps': ['activate', 'check', 'sleep', {'barrier': 'asleep'}, {'snapshot': s0},
                       {'barrier': 'saved'}, {'restore': s0, 'socket': b.sock}, 'wake', 'check']},
            {'name': 'disk1', 'socket': c.sock, 'queues': 2, 'packed': True,
             'steps': ['activate', 'check', {'wait': 0.3}, 'sleep', {'barrier': 'asleep'},
                       {'snapshot': s1}, {'barrier': 'saved'}, {'restore': s1, 'socket': d.sock},
                       'wake', 'check']}]})
        r = vufront('job', path, '--json-progress')
        assert r.returncode == 0, r.stdout + r.stderr
        events, summary = job_events(r.stdout)
        assert summary['ok'] is True
        asleep = max(index_of(events, dev, 'sleep', 'done') for dev in ('disk0', 'disk1'))
        saved = max(index_of(events, dev, 'snapshot', 'done') for dev in ('disk0', 'disk1'))
        for dev in ('disk0', 'disk1'):
            assert index_of(events, dev, 'snapshot', 'start') > asleep, events
            assert index_of(events, dev, 'restore', 'start') > saved, events
        assert all(dv['state_bytes'] > 0 for dv in summary['devices'])


def test_docs_examples_run_as_their_comments_say(tmp):
    """Each job file in docs/examples, run against the back-ends its comment
    tells the user to start (paths under /tmp/vufront-* moved into this test's
    directory, so parallel runs do not meet)."""
    examples = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'docs', 'examples')
    names = sorted(n for n in os.listdir(examples) if n.endswith('.json'))
    assert len(names) >= 3, names
    for name in names:
        with open(os.path.join(examples, name)) as f:
            text = f.read().replace('/tmp/vufront-', os.path.join(tmp, 'vufront-'))
        commands = re.findall(r'vufront-backend (--socket [^&\n]*)', text)
        assert commands, (name, 'the comment names no back-end to start')
        job = os.path.join(tmp, name)
        with open(job, 'w') as f:
            f.write(text)
        with Backends(ARGS.backend, tmp) as bs:
            for c in commands:
                args = c.split()
                sock = args[1]
                bs.start(os.path.basename(sock)[:-len('.sock')], *args[2:])
            r = vufront('job', job, '--json-progress')
            assert r.returncode == 0, (name, r.stdout, r.stderr)
            _, summary = job_events(r.stdout)
            assert summary['ok'] is True, (name, summary)


def test_job_refuses_a_snapshot_of_another_point(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        b = bs.start('b', '--size', '16M')
        s = os.path.join(tmp, 'old.vfsnap')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock,
             'steps': ['activate', 'sleep', {'snapshot': s}, 'wake', 'check', 'sleep',
                       {'restore': s, 'socket': b.sock}, 'wake']}]})
        r = vufront('job', path, '--no-progress')
        assert r.returncode == 1, r.stderr
        assert 'vufront job: disk0: steps[6] restore: ' in r.stderr, r.stderr
        assert "not of the guest's current point" in r.stderr, r.stderr


def test_job_migrates_a_running_disk_and_its_memory_while_io_runs(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        b = bs.start('b', '--size', '16M')
        c = bs.start('c', '--size', '16M')
        path = write_job(tmp, {'devices': [
            {'name': 'disk0', 'socket': a.sock,
             'steps': ['activate', 'check',
                       {'migrate': {'socket': b.sock, 'chunk_pages': 32, 'state_dir': tmp}},
                       'check', 'sleep', 'wake',
                       {'migrate': {'socket': c.sock, 'max_rounds': 2, 'threshold_pages': 0,
                                    'state_dir': tmp}},
                       'check']}]})
        r = vufront('job', path, '--json-progress')
        assert r.returncode == 0, r.stdout + r.stderr
        events, summary = job_events(r.stdout)
        assert summary['ok'] is True, summary
        done = [e for e in events if e['name'] == 'migrate' and e['event'] == 'done']
        assert len(done) == 2, events
        for e in done:
            m = e['migrate']
            assert set(m) == {'how', 'rounds', 'round_pages', 'final_pages', 'memory_bytes',
                              'state_bytes', 'io_requests', 'downtime_ms', 'stop_copy_ms',
                              'verify_ms', 'switch_ms', 'total_ms'}, m
            assert m['how'] == 'device state', m
            assert m['rounds'] == len(m['round_pages']) >= 2, m
            assert m['round_pages'][0] * 4096 == m['memory_bytes'], m
            assert m['round_pages'][1] > 0, m   # what the I/O dirtied in the first round
            assert m['io_requests'] > 0 and m['state_bytes'] > 16 << 20, m
            assert 0 < m['downtime_ms'] <= m['total_ms'], m
            assert e['bytes'] == m['state_bytes'], e
            assert 'memory equal' in e['detail'], e
        assert done[1]['migrate']['rounds'] == 2, done[1]   # max_rounds
        # every write before and during both migrations read back at the end
        checks = [e['detail'] for e in events if e['name'] == 'check' and e['event'] == 'done']
        assert 'earlier write(s) per queue intact' in checks[-1], checks
        assert summary['devices'][0]['state_bytes'] == sum(e['bytes'] for e in done), summary
        assert not [f for f in os.listdir(tmp) if f.startswith('vufront-migrate-')], os.listdir(tmp)
        others = [e for e in events if e['event'] == 'done' and e['name'] != 'migrate']
        assert others and all(e['migrate'] is None for e in others), others


def test_job_file_checks_migrate_steps(tmp):
    cases = [
        ({'migrate': {'socket': '/tmp/x.sock'}}, ['activate', 'sleep'], 'needs an active device'),
        ({'migrate': {}}, ['activate'], 'missing key "socket"'),
        ({'migrate': '/tmp/x.sock'}, ['activate'], 'expected an object'),
        ({'migrate': {'socket': '/tmp/x.sock', 'max_rounds': 0}}, ['activate'], 'max_rounds'),
        ({'migrate': {'socket': '/tmp/x.sock', 'treshold_pages': 1}}, ['activate'],
         'did you mean "threshold_pages"'),
    ]
    for step, before, want in cases:
        path = write_job(tmp, {'devices': [{'socket': '/tmp/a.sock', 'steps': before + [step]}]})
        r = vufront('job', path)
        assert r.returncode == 2, (step, r.stderr)
        assert 'devices[0].steps[%d]' % len(before) in r.stderr and want in r.stderr, (step, r.stderr)
    path = write_job(tmp, {'devices': [{'socket': '/tmp/a.sock', 'kind': 'net',
                                        'steps': ['activate', {'migrate': {'socket': '/tmp/b.sock'}}]}]})
    r = vufront('job', path)
    assert r.returncode == 2 and 'blk devices only' in r.stderr, r.stderr


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-snap-')


if __name__ == '__main__':
    sys.exit(main())
