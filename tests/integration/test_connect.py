#!/usr/bin/env python3
"""Connecting to nothing: `vufront probe`, `check`, `snapshot`, `restore` and
`job` given a path where no back-end can be (nothing there, a regular file, a
directory) say so at once, although their timeout is long; a socket nobody
accepts on (stale) is tried until the timeout and the error says what was
seen; with --wait-for-backend (a job's "wait_for_backend") they wait for a
back-end that starts later and then work.

"At once" is not timed: the commands run with a 30 s timeout (60 s for a
job) inside a 20 s subprocess limit, so one that waited for its timeout
fails the test with TimeoutExpired.

    test_connect.py --vufront build/bin/vufront --backend build/bin/vufront-backend [-k NAME]
"""
import argparse
import json
import os
import socket
import subprocess
import sys

from runner import run_tests
from vubackend import Backend, StderrLog, run, write_job

ARGS = None
LONG = '30'       # the commands' --timeout: never reached by the fail-fast cases
LIMIT = 20        # seconds a fail-fast command may take here (a hang fails)


def vufront(*args, timeout=LIMIT):
    return run(ARGS.vufront, *args, timeout=timeout)


def nothing_there(tmp):
    """(path, what the error must say) for the three kinds of nothing."""
    regular = os.path.join(tmp, 'regular.file')
    with open(regular, 'w') as f:
        f.write('not a socket\n')
    directory = os.path.join(tmp, 'a.dir')
    os.mkdir(directory)
    return [(os.path.join(tmp, 'missing.sock'), 'not_found: no such file'),
            (regular, 'invalid_argument: not a socket (a regular file)'),
            (directory, 'invalid_argument: a directory, not a socket')]


def stale_socket(tmp):
    """A socket file nobody listens on (bound, never listening): connect()
    is refused, as at a crashed back-end's socket. The socket is returned
    to be closed by the caller."""
    path = os.path.join(tmp, 'stale.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    return path, s


def test_probe_says_at_once_what_is_at_the_path(tmp):
    for path, said in nothing_there(tmp):
        r = vufront('probe', path, '--timeout', LONG)
        assert r.returncode == 1, (path, r.stdout, r.stderr)
        assert r.stderr.startswith('vufront probe: connect ' + path + ': ' + said), r.stderr
        if 'no such file' in said:
            assert '--wait-for-backend' in r.stderr, r.stderr  # how to wait instead


def test_check_says_at_once_what_is_at_the_path(tmp):
    for path, said in nothing_there(tmp):
        r = vufront('check', path, '--timeout', LONG, '--json')
        assert r.returncode == 1, (path, r.stdout, r.stderr)
        j = json.loads(r.stdout)
        step = j['steps'][0]
        assert step['name'] == 'negotiate' and not step['ok'], j
        assert ('connect ' + path + ': ' + said) in step['detail'], step


def test_snapshot_restore_and_job_say_at_once_what_is_at_the_path(tmp):
    path, said = nothing_there(tmp)[1]  # the regular file
    r = vufront('snapshot', path, '--out', os.path.join(tmp, 's.vfsnap'), '--timeout', LONG)
    assert r.returncode == 1 and said in r.stderr, r.stderr
    job = write_job(tmp, {'devices': [{'name': 'd', 'socket': path, 'steps': ['activate']}]})
    r = vufront('job', job, '--json-progress')
    assert r.returncode == 1 and ('d: steps[0] activate: ' in r.stderr) and said in r.stderr, r.stderr


def test_stale_socket_is_retried_until_the_timeout_and_named(tmp):
    path, s = stale_socket(tmp)
    try:
        r = vufront('probe', path, '--timeout', '0.5')
        assert r.returncode == 1, r.stderr
        assert 'timeout: no back-end accepted before the deadline' in r.stderr, r.stderr
        assert 'the socket exists but nobody accepts on it' in r.stderr, r.stderr
        r = vufront('check', path, '--timeout', '0.5', '--json')
        assert r.returncode == 1, r.stdout
        detail = json.loads(r.stdout)['steps'][0]['detail']
        assert 'nobody accepts on it' in detail and 'Connection refused' in detail, detail
    finally:
        s.close()


def waiting_command(*args):
    """A vufront command left running (stdout and stderr kept); the caller
    stops it by pid."""
    p = subprocess.Popen([ARGS.vufront, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    return p, StderrLog(p.stderr)


def finish(p, log):
    """Its exit status and stdout; killed (by pid) if it still runs after LIMIT s."""
    try:
        p.wait(LIMIT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
        raise AssertionError('still running after %d s:\n%s' % (LIMIT, ''.join(log)))
    log.join(2)
    return p.returncode, p.stdout.read()


def test_wait_for_backend_a_backend_that_starts_later(tmp):
    for cmd in (['probe'], ['check', '--json']):
        sock = os.path.join(tmp, cmd[0] + '.sock')
        p, log = waiting_command(cmd[0], sock, '--wait-for-backend', '--timeout', LONG, *cmd[1:])
        b = None
        try:
            log.expect('waiting up to 30 s for a back-end to listen at ' + sock + ' (now: no such file)')
            # without the option the same path fails at once: nothing is there yet
            r = vufront(cmd[0], sock, '--timeout', LONG)
            assert r.returncode == 1 and 'no such file' in (r.stdout + r.stderr), r.stderr
            assert p.poll() is None, ''.join(log)  # still waiting
            b = Backend(ARGS.backend, sock)
            code, out = finish(p, log)
            assert code == 0, (cmd, out, ''.join(log))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if b:
                b.stop()
        if cmd[0] == 'check':
            assert json.loads(out)['ok'] is True, out


def test_job_wait_for_backend_key(tmp):
    sock = os.path.join(tmp, 'later.sock')
    job = write_job(tmp, {'devices': [{'name': 'd', 'socket': sock, 'wait_for_backend': True,
                                       'steps': ['activate', 'check']}]})
    p, log = waiting_command('job', job, '--json-progress')
    b = None
    try:
        # the activate step has begun (its connect waits): start the back-end
        line = p.stdout.readline()
        assert json.loads(line)['event'] == 'start' and json.loads(line)['name'] == 'activate', line
        assert p.poll() is None
        b = Backend(ARGS.backend, sock)
        code, out = finish(p, log)
        assert code == 0, (out, ''.join(log))
        assert json.loads(out.splitlines()[-1])['ok'] is True, out
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        if b:
            b.stop()
    r = vufront('job', write_job(tmp, {'devices': [{'socket': sock, 'wait_for_backend': 'yes',
                                                    'steps': ['activate']}]}, 'bad.json'))
    assert r.returncode == 2 and 'wait_for_backend' in r.stderr, r.stderr


def test_help_documents_the_option(tmp):
    for cmd in ('probe', 'check', 'snapshot', 'restore', 'attach'):
        r = vufront(cmd, '--help')
        assert '--wait-for-backend' in r.stdout, (cmd, r.stdout)


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-connect-')


if __name__ == '__main__':
    sys.exit(main())
