#!/usr/bin/env python3
"""`vufront demo` and `vufront check` as a user runs them: exit codes, the
steps they print, JSON output, against vufront-backend (blk and net) and
virtiofsd, and the failures a user sees (no back-end, a back-end that dies,
usage errors)."""
import argparse
import json
import os
import subprocess
import sys
import time

from runner import run_tests
from vubackend import Backend, Peer

ARGS = None


def start_backend(tmp, *args):
    """vufront-backend on tmp/b.sock, ready once it listens; stopped by pid
    (stop() in a finally)."""
    return Backend(ARGS.backend, os.path.join(tmp, 'b.sock'), *args)


def vufront(*args, timeout=120):
    return subprocess.run([ARGS.vufront, *args], capture_output=True, text=True, timeout=timeout)


def check_json(*args):
    r = vufront('check', *args, '--json')
    out = json.loads(r.stdout)
    return r.returncode, out


def test_demo(tmp):
    r = vufront('demo')
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'every step worked' in r.stdout
    for step in ('negotiate', 'shared memory', 'config change', 'sleep', 'wake', 'reset'):
        assert step in r.stdout, step
    j = json.loads(vufront('demo', '--json').stdout)
    assert j['ok'] is True
    assert len(j['steps']) == 13 and all(s['ok'] for s in j['steps'])


def test_check_blk_four_queues_packed(tmp):
    b = start_backend(tmp, '--queues', '4')
    try:
        rc, j = check_json(b.sock, '--queues', '4', '--packed')
        assert rc == 0, j
        assert [s['name'] for s in j['steps']][:4] == ['negotiate', 'read config', 'set memory',
                                                      'activate']
        assert len(j['steps']) == 11 and all(s['ok'] for s in j['steps'])
        r = vufront('check', b.sock, '--msix')  # text output, MSI-X path
        assert r.returncode == 0 and 'result: ok' in r.stdout, r.stdout
    finally:
        b.stop()


def test_check_packed_rings_of_any_size(tmp):
    """Packed rings need not be a power of two (virtio 1.2 section 2.8)."""
    b = start_backend(tmp, '--queues', '2')
    try:
        for size in ('3', '100', '1000'):
            rc, j = check_json(b.sock, '--queues', '2', '--packed', '--queue-size', size)
            assert rc == 0, (size, j)
            assert len(j['steps']) == 11 and all(s['ok'] for s in j['steps']), (size, j)
    finally:
        b.stop()


def test_check_net_echo(tmp):
    b = start_backend(tmp, '--device', 'net', '--queues', '2')
    try:
        rc, j = check_json(b.sock, '--device', 'net', '--queues', '2')
        assert rc == 0, j
        assert 'frames echoed' in j['steps'][4]['detail']
    finally:
        b.stop()


def test_check_packed_short_vring_base_is_normalised(tmp):
    # --short-vring-base: GET_VRING_BASE of a packed ring answered as DPDK
    # 22.11 does (bits 0-15 only); the sleep step's check of every base
    # against the driver's next index passes, and says so once
    for device in ('blk', 'net'):
        b = start_backend(tmp, '--device', device, '--queues', '2', '--short-vring-base')
        try:
            rc, j = check_json(b.sock, '--device', device, '--queues', '2', '--packed')
            assert rc == 0, (device, j)
            sleep = [s for s in j['steps'] if s['name'] == 'sleep'][0]['detail']
            assert 'q0=0x80' in sleep and 'note: the back-end answers GET_VRING_BASE' in sleep, sleep
            assert sleep.count('note:') == 1, sleep
            rc, j = check_json(b.sock, '--device', device, '--queues', '2')  # split: untouched
            assert rc == 0, (device, j)
            assert 'note:' not in [s for s in j['steps'] if s['name'] == 'sleep'][0]['detail'], j
        finally:
            b.stop()


def test_check_fs_virtiofsd(tmp):
    share = os.path.join(tmp, 'share')
    os.mkdir(share)
    with open(os.path.join(share, 'hello.txt'), 'w') as f:
        f.write('hello from the shared directory\n')
    # virtiofsd exits by itself after its one connection: Peer never signals its stale pid
    with Peer(ARGS.peers, 'start-virtiofsd.sh', os.path.join(tmp, 'fs.sock'), share) as peer:
        rc, j = check_json(peer.sock, '--device', 'fs', '--fs-file', 'hello.txt')
        assert rc == 0, j
        assert 'read 32 bytes of hello.txt' in j['steps'][4]['detail']


def test_check_without_backend_fails_at_negotiate(tmp):
    r = vufront('check', os.path.join(tmp, 'nobody.sock'), '--timeout', '0.2')
    assert r.returncode == 1
    assert 'FAIL  negotiate' in r.stdout and 'no such file' in r.stdout, r.stdout


def test_check_backend_dying_at_sleep_names_the_step(tmp):
    b = start_backend(tmp, '--crash-at', 'GET_VRING_BASE')
    try:
        rc, j = check_json(b.sock)
        assert rc == 1
        failed = [s for s in j['steps'] if not s['ok']]
        assert len(failed) == 1 and failed[0]['name'] == 'sleep', j
        assert failed[0]['detail'].startswith('sleep: GET_VRING_BASE'), failed[0]
    finally:
        b.stop()


def test_check_oversized_backend_request_fails_the_step_naming_it(tmp):
    """backend-req-oversize: the back-end sends one back-end request whose
    header announces more body than the channel allows, while it holds a
    request of a step: check fails at that step, naming the back-end request
    and the reason, and the back-end saw its channel closed."""
    for held, step in (('GET_CONFIG', 'read config'), ('SET_VRING_KICK', 'activate'),
                       ('GET_VRING_BASE', 'sleep')):
        b = start_backend(tmp, '--backend-req-oversize', held)
        try:
            rc, j = check_json(b.sock)
            assert rc == 1, j
            failed = [s for s in j['steps'] if not s['ok']]
            assert len(failed) == 1 and failed[0]['name'] == step, (held, j)
            d = failed[0]['detail']
            assert 'back-end channel' in d and 'CONFIG_CHANGE_MSG' in d and 'oversized' in d, d
            b.wait_log('the front-end closed the back-end channel')
        finally:
            b.stop()


def reconnect_across_a_restart(tmp, *check_args):
    """--reconnect: the back-end dies taking the 5th request (the flush of the
    I/O after wake) with it and is restarted on its socket and disk image; the
    check resumes there, the request is resubmitted, and every step passes,
    the I/O step showing the loss and the resume. The check's JSON and the
    new back-end's log."""
    img = os.path.join(tmp, 'disk.img')
    args = ('--image', img, '--size', '16M')
    b = start_backend(tmp, *args, '--crash-in-request', '5')
    again = None
    p = subprocess.Popen([ARGS.vufront, 'check', b.sock, '--reconnect', '--json', *check_args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        b.proc.wait(60)
        again = start_backend(tmp, *args)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        b.stop()
        if again:
            again.stop()
    j = json.loads(out)
    assert p.returncode == 0 and j['ok'] is True, (j, err)
    events = [e for s in j['steps'] for e in s.get('events', [])]
    assert any(e.startswith('backend_lost: ') for e in events), j
    assert any(e.startswith('resumed: ') for e in events), j
    return j, again.log_text()


def test_check_reconnect_rides_out_a_backend_restart(tmp):
    reconnect_across_a_restart(tmp)
    assert vufront('check', 's', '--reconnect-give-up', '5').returncode == 2  # needs --reconnect


def test_check_reconnect_packed_rings_resume_from_the_inflight_region(tmp):
    """The same with packed rings: the new back-end finds where they stood in
    the in-flight region and resubmits the request the dead one took."""
    j, log = reconnect_across_a_restart(tmp, '--packed')
    events = [e for s in j['steps'] for e in s.get('events', [])]
    assert any('where the in-flight region says' in e for e in events), j
    assert 'packed ring resumed from the in-flight region' in log, log
    assert 'resubmitting 1 request(s)' in log, log


def held_request_check(tmp, held, *check_args):
    """`vufront check` against a back-end that holds `held` (each of them)
    for 60 s: the failed step and how long check took in all."""
    delays = [a for r in held for a in ('--delay-reply', r + ':60000')]
    b = start_backend(tmp, *delays)
    try:
        start = time.monotonic()
        rc, j = check_json(b.sock, *check_args)
        took = time.monotonic() - start
        assert rc == 1, j
        failed = [s for s in j['steps'] if not s['ok']]
        assert len(failed) == 1, j
        return failed[0], took
    finally:
        b.stop()


# Not a timing: the bound tells the 2 s asked for from the 30 s that used to
# be fixed for these two requests (and any sanitizer's slowdown).
GAVE_UP_EARLY = 15


def test_check_drain_timeout_bounds_a_held_ring_stop(tmp):
    step, took = held_request_check(tmp, ['GET_VRING_BASE'], '--timeout', '2',
                                    '--drain-timeout', '2')
    assert step['name'] == 'sleep', step
    assert step['detail'].startswith('sleep: GET_VRING_BASE: timeout'), step
    assert took < GAVE_UP_EARLY, took


def test_check_timeout_bounds_a_held_memory_table(tmp):
    # SET_MEM_TABLE at activation, ADD_MEM_REG when memory is set on its own
    step, took = held_request_check(tmp, ['SET_MEM_TABLE', 'ADD_MEM_REG'], '--timeout', '2')
    assert step['name'] in ('set memory', 'activate'), step
    assert 'MEM' in step['detail'] and 'timeout' in step['detail'], step
    assert took < GAVE_UP_EARLY, took


def test_check_names_a_missing_feature_and_what_to_change(tmp):
    b = start_backend(tmp, '--refuse-feature', 'RING_PACKED')
    try:
        rc, j = check_json(b.sock, '--packed')
        assert rc == 1, j
        detail = j['steps'][0]['detail']
        assert '0x400000000 (RING_PACKED)' in detail, detail
        assert 'check without --packed' in detail, detail
    finally:
        b.stop()


def test_check_drain_timeout_in_help(tmp):
    r = vufront('check', '--help')
    assert '--drain-timeout' in r.stdout and 'GET_VRING_BASE' in r.stdout, r.stdout
    assert vufront('check', 's', '--drain-timeout', '0').returncode == 2


def test_check_usage_errors_exit_2(tmp):
    for args in ([], ['s', '--queues', '0'], ['s', '--device', 'gpu'], ['s', '--bogus']):
        r = vufront('check', *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert vufront('check', '--help').returncode == 0
    assert vufront('demo', '--backend', os.path.join(tmp, 'missing')).returncode == 1


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--peers', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-check-')


if __name__ == '__main__':
    sys.exit(main())
