#!/usr/bin/env python3
"""`vufront` as a service (docs/service.md):

* the log: -v and --log-level change what is printed on stderr (probe,
  attach), stdout stays the same;
* the request trace (--trace): each request's name in both directions, a
  reply timed from its request, for a probe against vufront-backend and
  for the back-end channel (demo);
* attach's log lines carry the date with milliseconds and record snapshot,
  restore and reconnect commands with their outcome;
* attach --pidfile: written once serving, removed at exit, a second attach
  naming it refused (a stale one replaced);
* readiness: sd_notify READY=1 (with STATUS=) once serving and STOPPING=1 at
  exit, on a unix datagram socket named by NOTIFY_SOCKET.

    test_service.py --vufront build/bin/vufront --backend build/bin/vufront-backend [-k NAME]
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys

from runner import run_tests
from vubackend import Attach, Backends, Control, Process, StderrLog, run

ARGS = None

# "vufront attach: 2026-12-06 11:00:00.123 info: ..."
STAMPED = re.compile(r'^vufront attach: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} '
                     r'(debug|info|warning|error): ')
# "vufront probe: trace: /tmp/b.sock -> GET_FEATURES (flags 0x1, 0 bytes, 0 fds)"
TRACE = re.compile(r'trace: (?P<label>.+?) (?P<dir>->|<-) (?P<name>[A-Z_]+)(?P<reply> reply)? '
                   r'\(flags (?P<flags>0x[0-9a-f]+), (?P<size>\d+) bytes?, (?P<fds>\d+) fds?\)'
                   r'(?P<after> after \d+\.\d{3} ms)?$')


def traces(stderr):
    return [m.groupdict() for m in (TRACE.search(line) for line in stderr.splitlines()) if m]


class NotifySocket:
    """A unix datagram socket for NOTIFY_SOCKET; messages() waits for what
    the service manager would receive."""

    def __init__(self, tmp):
        self.path = os.path.join(tmp, 'notify.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_for(self, key, timeout=20):
        """The first datagram holding line `key` (e.g. 'READY=1'), as a dict."""
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(4096).decode()
            fields = dict(line.split('=', 1) for line in data.splitlines() if '=' in line)
            if key.split('=')[0] in fields and key in data.splitlines():
                return fields

    def close(self):
        self.sock.close()


class QuietAttach(Process):
    """`vufront attach` that may log nothing at start: ready once it says
    READY=1 on `notify`."""

    stop_grace = 10

    def __init__(self, vufront, notify, *args):
        env = dict(os.environ, NOTIFY_SOCKET=notify.path)
        self.proc = subprocess.Popen([vufront, 'attach', *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = StderrLog(self.proc.stderr)
        try:
            self.ready = notify.wait_for('READY=1')
        except Exception:
            self.stop()
            raise


# ---- the log level ---------------------------------------------------------------------

def test_log_level_changes_what_probe_prints(tmp):
    missing = os.path.join(tmp, 'nobody.sock')
    # info (the default) says what it waits for; error does not, the error stays
    r = run(ARGS.vufront, 'probe', missing, '--wait-for-backend', '--timeout', '0.2')
    assert r.returncode == 1 and 'vufront probe: waiting up to 0.2 s' in r.stderr, r.stderr
    r = run(ARGS.vufront, 'probe', missing, '--wait-for-backend', '--timeout', '0.2',
            '--log-level', 'error')
    assert r.returncode == 1 and 'waiting up to' not in r.stderr, r.stderr
    assert 'vufront probe: connect ' in r.stderr and 'timeout' in r.stderr, r.stderr
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        quiet = run(ARGS.vufront, 'probe', a.sock, '--json')
        assert quiet.returncode == 0 and 'connected to' not in quiet.stderr, quiet.stderr
        for flag in ('-v', '--verbose', '--log-level=debug'):
            loud = run(ARGS.vufront, 'probe', a.sock, '--json', flag)
            assert loud.returncode == 0, loud.stderr
            assert 'vufront probe: connected to ' + a.sock in loud.stderr, (flag, loud.stderr)
            assert json.loads(loud.stdout) == json.loads(quiet.stdout)
    r = run(ARGS.vufront, 'probe', missing, '--log-level', 'chatty')
    assert r.returncode == 2 and '--log-level' in r.stderr, r.stderr
    r = run(ARGS.vufront, 'probe', missing, '-v', '--log-level', 'info')
    assert r.returncode == 2, r.stderr


def test_log_level_changes_what_attach_prints(tmp):
    notify = NotifySocket(tmp)
    try:
        with Backends(ARGS.backend, tmp) as bs:
            a = bs.start('a', '--size', '4M')
            ctl = os.path.join(tmp, 'c.ctl')
            with QuietAttach(ARGS.vufront, notify, '--control', ctl, '--backend', a.sock,
                             '--log-level', 'warning') as att:
                with Control(ctl) as c:
                    c.ok('status')
                assert att.stop() == 0
            # warnings only (the signal's "stopping"): no serving, session or stopped line
            lines = [line for line in att.log if line.strip()]
            assert all(' warning: ' in line for line in lines), lines
            assert not any('serving' in line or 'session' in line for line in lines), lines
            with Attach(ARGS.vufront, ctl, '--backend', a.sock, '-v') as att:
                with Control(ctl) as c:
                    c.ok('status')
                att.wait_log('debug: session 1: disk0: status (id 1)')
                assert att.stop() == 0
                assert 'info: stopped' in att.log_text(), att.log_text()
    finally:
        notify.close()


# ---- the request trace -------------------------------------------------------------------

def test_trace_shows_each_request_in_both_directions(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        plain = run(ARGS.vufront, 'probe', a.sock, '--json')
        assert a.log.wait_count('front-end disconnected', 1)
        before = len(a.log)
        r = run(ARGS.vufront, 'probe', a.sock, '--json', '--trace')
        assert a.log.wait_count('front-end disconnected', 2)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == json.loads(plain.stdout), 'stdout is the same with --trace'
        assert 'trace:' not in plain.stderr, plain.stderr
        lines = traces(r.stderr)
        assert lines, r.stderr
        assert all(t['label'] == a.sock for t in lines), lines
        sent = [t['name'] for t in lines if t['dir'] == '->' and not t['reply']]
        replies = [t for t in lines if t['dir'] == '<-' and t['reply']]
        for name in ('GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'GET_QUEUE_NUM', 'GET_MAX_MEM_SLOTS',
                     'GET_CONFIG'):
            assert name in sent, (name, sent)
            assert any(t['name'] == name for t in replies), (name, r.stderr)
        assert 'SET_OWNER' in sent, sent
        for t in replies:  # each reply answers a request sent before it, timed from it
            assert t['name'] in sent and t['after'], (t, r.stderr)
        # what the back-end received is what vufront says it sent, in order
        got = [line.split('<- ')[1].split()[0] for line in a.log[before:] if '<- ' in line]
        assert got == sent, (got, sent)


def test_trace_shows_the_backend_channel_both_ways(tmp):
    r = run(ARGS.vufront, 'demo', '--backend', ARGS.backend, '--trace', timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [t for t in traces(r.stderr) if t['label'] == 'back-end channel']
    requests = [t['name'] for t in lines if t['dir'] == '<-' and not t['reply']]
    replies = [t for t in lines if t['dir'] == '->' and t['reply']]
    for name in ('BACKEND_SHMEM_MAP', 'BACKEND_CONFIG_CHANGE_MSG'):
        assert name in requests, (name, requests, r.stderr[-3000:])
        assert any(t['name'] == name and t['after'] for t in replies), (name, r.stderr[-3000:])
    # the front-end's side too, with its replies
    assert any(t['dir'] == '->' and t['name'] == 'SET_MEM_TABLE' for t in traces(r.stderr))


# ---- attach's log ----------------------------------------------------------------------------

def test_attach_log_has_date_with_ms_and_snapshot_restore_reconnect_outcomes(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        ctl = os.path.join(tmp, 'c.ctl')
        snap = os.path.join(tmp, 'disk.vfsnap')
        with Attach(ARGS.vufront, ctl, '--backend', a.sock) as att, Control(ctl) as c:
            assert c.ok('snapshot', {'path': snap})['path'] == snap
            att.wait_log('session 1: disk0: snapshot (id 1)')
            att.wait_log('session 1: disk0: snapshot: ok (%s, ' % snap)
            bad = os.path.join(tmp, 'no-such-dir', 'x.vfsnap')
            e = c.error('snapshot', {'path': bad})
            att.wait_log('session 1: disk0: snapshot: failed: ' + e['message'])
            c.ok('restore', {'path': snap})
            att.wait_log('session 1: disk0: restore: ok (%s, ' % snap)
            # a reconnect of a device that is not lost: refused, and the log says so
            e = c.error('reconnect', code='bad_state')
            att.wait_log('session 1: disk0: reconnect: failed: ' + e['message'])
            c.close()
            assert att.stop() == 0
            lines = [line for line in att.log if line.strip()]
            bad_lines = [line for line in lines if not STAMPED.match(line)]
            assert not bad_lines, bad_lines
            failed = [line for line in lines if 'snapshot: failed' in line]
            assert failed and ' warning: ' in failed[0], failed
            assert any(' info: stopped' in line for line in lines), lines


# ---- the pid file -----------------------------------------------------------------------------

def test_pidfile_written_when_serving_removed_at_exit_second_attach_refused(tmp):
    pidfile = os.path.join(tmp, 'attach.pid')
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        b = bs.start('b', '--size', '4M')
        with Attach(ARGS.vufront, os.path.join(tmp, 'a.ctl'), '--backend', a.sock,
                    '--pidfile', pidfile) as att:
            with open(pidfile) as f:
                assert f.read() == '%d\n' % att.pid
            r = run(ARGS.vufront, 'attach', '--control', os.path.join(tmp, 'b.ctl'),
                    '--backend', b.sock, '--pidfile', pidfile, timeout=30)
            assert r.returncode == 1, r.stderr
            assert 'names a live process (pid %d)' % att.pid in r.stderr, r.stderr
            assert not os.path.exists(os.path.join(tmp, 'b.ctl'))
            with open(pidfile) as f:
                assert f.read() == '%d\n' % att.pid, 'the refused attach left the file alone'
            assert att.stop() == 0
        assert not os.path.exists(pidfile), 'removed at exit'
        # a stale file (its process is gone) is replaced
        dead = subprocess.Popen(['true'])
        dead.wait()
        with open(pidfile, 'w') as f:
            f.write('%d\n' % dead.pid)
        with Attach(ARGS.vufront, os.path.join(tmp, 'a.ctl'), '--backend', a.sock,
                    '--pidfile', pidfile) as att:
            with open(pidfile) as f:
                assert f.read() == '%d\n' % att.pid
        assert not os.path.exists(pidfile)


# ---- sd_notify --------------------------------------------------------------------------------

def test_sd_notify_ready_when_serving_and_stopping_at_exit(tmp):
    notify = NotifySocket(tmp)
    try:
        with Backends(ARGS.backend, tmp) as bs:
            a = bs.start('a', '--size', '4M')
            ctl = os.path.join(tmp, 'c.ctl')
            with QuietAttach(ARGS.vufront, notify, '--control', ctl, '--backend', a.sock) as att:
                assert att.ready['STATUS'].startswith('serving disk0 (blk, %s) on %s' % (a.sock, ctl)), \
                    att.ready
                assert os.path.exists(ctl), 'READY=1 comes once the control socket listens'
                with Control(ctl) as c:
                    c.ok('status')
                att.proc.send_signal(signal.SIGTERM)
                stopping = notify.wait_for('STOPPING=1')
                assert stopping['STATUS'] == 'stopping', stopping
                assert att.wait_exit(20) == 0
    finally:
        notify.close()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument('--vufront', required=True)
    p.add_argument('--backend', required=True)
    p.add_argument('-k', dest='only')
    ARGS = p.parse_args()
    return run_tests(globals(), ARGS.only, prefix='vufront-svc-')


if __name__ == '__main__':
    sys.exit(main())
