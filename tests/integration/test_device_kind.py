#!/usr/bin/env python3
"""`--device` given wrong (protocol/device_kind_check.hpp): real back-ends
driven as another kind. qemu-storage-daemon (blk), virtiofsd (fs) and
vufront-backend --device net, each through probe, check, snapshot, restore,
job and attach: a clear mismatch is refused with an error naming what did not
fit, and when nothing decides the command warns "could not tell" and goes on."""
import argparse
import json
import os
import sys

from runner import run_tests
from vubackend import Attach, Backends, Peer, run, write_job

ARGS = None


def vufront(*args, timeout=120):
    return run(ARGS.vufront, *args, timeout=timeout)


def refused(r, kind, *pieces):
    """The command failed, naming the kind and every piece of evidence."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    text = r.stdout + r.stderr
    assert 'device kind' in text, text
    assert 'does not look like a %s device' % kind in text, text
    for p in pieces:
        assert p in text, (p, text)


def test_qsd_driven_as_net_and_fs(tmp):
    with Peer(ARGS.peers, 'start-qsd-blk.sh', os.path.join(tmp, 'q.sock'), 'null') as q:
        r = vufront('probe', q.sock, '--device', 'blk')
        assert r.returncode == 0 and 'warning' not in r.stderr, r.stderr
        # bit 6 is blk's BLK_SIZE and no net feature; one queue is no rx/tx pair
        refused(vufront('probe', q.sock, '--device', 'net'), 'net', 'bit 6 (blk BLK_SIZE)',
                'GET_QUEUE_NUM says 1 queue, a net device needs at least 2')
        refused(vufront('probe', q.sock, '--device', 'fs'), 'fs', 'bit 9 (blk FLUSH)',
                'a fs device needs at least 2')
        refused(vufront('check', q.sock, '--device', 'net', '--queues', '1'), 'net', 'bit 6')
        out = os.path.join(tmp, 'q.vfsnap')
        refused(vufront('snapshot', q.sock, '--device', 'net', '--out', out), 'net', 'bit 6')
        assert not os.path.exists(out)


def test_virtiofsd_driven_as_blk_could_not_tell(tmp):
    share = os.path.join(tmp, 'share')
    os.mkdir(share)
    # virtiofsd serves one connection, then exits: one per command
    with Peer(ARGS.peers, 'start-virtiofsd.sh', os.path.join(tmp, 'f.sock'), share) as f:
        r = vufront('probe', f.sock, '--device', 'blk', '--json')
        assert r.returncode == 0, r.stderr
        assert 'vufront probe: warning: could not tell whether the back-end is a blk device' in r.stderr
        j = json.loads(r.stdout)
        assert j['kind_doubt'].startswith('could not tell whether the back-end is a blk device'), j
    with Peer(ARGS.peers, 'start-virtiofsd.sh', os.path.join(tmp, 'g.sock'), share) as g:
        with Attach(ARGS.vufront, os.path.join(tmp, 'ctl'), '--backend', g.sock) as att:
            att.log.expect('warning: disk0: could not tell whether the back-end is a blk device')


def test_reference_net_driven_as_blk(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        n = bs.start('n', '--device', 'net')
        b = bs.start('b', '--size', '1M')
        evidence = 'it refused GET_CONFIG of 60 bytes, the size of a blk config space'
        refused(vufront('probe', n.sock), 'blk', evidence)
        refused(vufront('check', n.sock), 'blk', evidence)
        out = os.path.join(tmp, 'n.vfsnap')
        refused(vufront('snapshot', n.sock, '--out', out), 'blk', evidence)
        assert not os.path.exists(out)
        # a blk snapshot restored into the net back-end: the file's kind is refused
        snap = os.path.join(tmp, 'b.vfsnap')
        assert vufront('snapshot', b.sock, '--out', snap).returncode == 0
        refused(vufront('restore', n.sock, '--in', snap), 'blk', evidence)
        job = write_job(tmp, {'devices': [{'name': 'disk0', 'socket': n.sock,
                                           'steps': ['activate', 'check']}]})
        r = vufront('job', job)
        assert r.returncode == 1 and 'does not look like a blk device' in r.stdout + r.stderr, r
        r = run(ARGS.vufront, 'attach', '--control', os.path.join(tmp, 'ctl'), '--backend', n.sock,
                timeout=30)
        refused(r, 'blk', evidence)


def test_reference_blk_driven_as_net_and_fs(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        b = bs.start('b', '--size', '1M')
        refused(vufront('probe', b.sock, '--device', 'net'), 'net', 'bit 6 (blk BLK_SIZE)')
        refused(vufront('probe', b.sock, '--device', 'fs'), 'fs', 'bit 2 (blk SEG_MAX)')
        r = run(ARGS.vufront, 'attach', '--control', os.path.join(tmp, 'ctl'), '--backend', b.sock,
                '--device', 'net', timeout=30)
        refused(r, 'net', 'bit 6')
        # driven as what it is: no warning
        r = vufront('probe', b.sock)
        assert r.returncode == 0 and r.stderr == '', r.stderr


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--peers', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-kind-')


if __name__ == '__main__':
    sys.exit(main())
