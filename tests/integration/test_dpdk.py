#!/usr/bin/env python3
"""`vufront check --device net` against DPDK: dpdk-testpmd's net_vhost PMD
(Debian 12's DPDK 22.11, librte_vhost, the vhost-user library of OVS-DPDK
and every other DPDK back-end) echoing frames back (io forwarding, port in
loop topology). Split and packed rings, 1 and 2 queue pairs. DPDK answers a
packed ring's GET_VRING_BASE in its short form (bits 0-15 only): the check's
sleep step must show the device normalised it (and said so once).

One testpmd at a time (it busy-polls a core), each started here as our child
and stopped by pid (SIGINT, then SIGKILL) whatever happens, its runtime
directory /var/run/dpdk/PREFIX removed. A missing dpdk-testpmd is a failure:
./run.sh installs it (Debian package dpdk-dev)."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from runner import run_tests

ARGS = None
TESTPMD_PACKAGE = 'dpdk-dev'


def listening(path):
    """Whether a unix socket bound to `path` listens (/proc/net/unix: flag
    __SO_ACCEPTCON, 0x10000), without connecting to it (a connection would be
    a vhost-user session for testpmd)."""
    with open('/proc/net/unix') as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return True
    return False


class Testpmd:
    """dpdk-testpmd serving `pairs` queue pairs of a vhost-user net device on
    tmp/dpdk.sock, ready once the socket listens. Stopped by pid: use it as a
    context manager."""

    start_wait = 60  # seconds; it is ready in under 1 s on an idle machine
    stop_grace = 10  # seconds between SIGINT and SIGKILL (it needs about 2 s)

    def __init__(self, tmp, pairs):
        self.sock = os.path.join(tmp, 'dpdk.sock')
        self.prefix = 'vufront-it-%d-%d' % (os.getpid(), pairs)
        self.log_path = os.path.join(tmp, 'testpmd.log')
        q = str(pairs)
        cmd = [ARGS.testpmd, '-l', '0-1', '--no-huge', '-m', '256', '--no-pci', '--no-shconf',
               '--no-telemetry', '--file-prefix', self.prefix,
               '--vdev', 'net_vhost0,iface=%s,queues=%s' % (self.sock, q),
               '--', '--port-topology=loop', '--forward-mode=io', '--rxq=' + q, '--txq=' + q,
               '--nb-cores=1', '--total-num-mbufs=4096', '--stats-period', '3600',
               # forwarding starts once the link is up, i.e. once vufront's device
               # is ready, and would first drain (drop) what the guest already sent
               '--no-flush-rx']
        with open(self.log_path, 'w') as log:
            # not niced: under load a niced testpmd answers vufront's requests
            # (on its vhost thread) several times slower
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + self.start_wait
            while not listening(self.sock):
                if self.proc.poll() is not None:
                    raise AssertionError('dpdk-testpmd exited (%d) before listening:\n%s'
                                         % (self.proc.returncode, self.log()))
                if time.monotonic() > deadline:
                    raise AssertionError('dpdk-testpmd did not listen on %s within %d s:\n%s'
                                         % (self.sock, self.start_wait, self.log()))
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise

    def log(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()[-4000:]

    def stop(self):
        """SIGINT, SIGKILL after stop_grace s; always removes its runtime dir."""
        try:
            if self.proc.poll() is None:  # not reaped: the pid is still ours
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(self.stop_grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            shutil.rmtree('/var/run/dpdk/' + self.prefix, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        if exc_type is not None:
            sys.stderr.write('dpdk-testpmd logged:\n%s\n' % self.log())


def check(sock, pairs, packed):
    """`vufront check --device net --json`: its exit status and report."""
    args = [ARGS.vufront, 'check', sock, '--device', 'net', '--queues', str(pairs),
            # generous: DPDK's vhost thread polls new connections once a second
            '--timeout', '20', '--json']
    if packed:
        args.append('--packed')
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise AssertionError('vufront check printed no JSON (exit %d): %s %s'
                             % (r.returncode, r.stdout, r.stderr))
    return r.returncode, report


def check_against_testpmd(tmp, pairs):
    with Testpmd(tmp, pairs) as t:
        for packed in (False, True):
            rc, j = check(t.sock, pairs, packed)
            what = '%d pair(s), %s rings: %s' % (pairs, 'packed' if packed else 'split',
                                                 json.dumps(j, indent=1))
            assert rc == 0 and j['ok'] is True, what
            steps = {s['name']: s['detail'] for s in j['steps']}
            assert len(j['steps']) == 11, what
            assert 'frames echoed, equal' in steps['I/O after wake'], what
            sleep = steps['sleep']
            if packed:
                # DPDK answered 0x8002 for the ring the driver had at 0x80028002
                assert 'short form' in sleep and 'taken as 0x8' in sleep, what
                assert 'q0=0x8' in sleep, what
            else:
                assert 'note:' not in sleep, what


def test_testpmd_one_queue_pair(tmp):
    check_against_testpmd(tmp, 1)


def test_testpmd_two_queue_pairs(tmp):
    check_against_testpmd(tmp, 2)


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--testpmd', default='dpdk-testpmd', help='the dpdk-testpmd to run')
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    found = shutil.which(ARGS.testpmd)
    if not found:
        print('FAIL: %s not found: install Debian\'s %s (./run.sh installs it)'
              % (ARGS.testpmd, TESTPMD_PACKAGE), flush=True)
        print('0 passed, 1 failed')
        return 1
    ARGS.testpmd = found
    return run_tests(globals(), ARGS.k, prefix='vufront-dpdk-')


if __name__ == '__main__':
    sys.exit(main())
