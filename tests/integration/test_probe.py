#!/usr/bin/env python3
"""Integration tests of `vufront probe` against real back-ends.

Each test starts the back-end it needs (shared/peers start scripts, as a
vubackend.Peer), stops it in a `finally` (through its pidfd), and compares
vufront's view with what the independent Python front-end shared/peers/probe.py
reports for the same daemon.

    test_probe.py --vufront build/bin/vufront --peers ../shared/peers [-k NAME]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading

from runner import run_tests
from vubackend import Peer

ARGS = None


def peer_of(script, sock, *args, env=None):
    return Peer(ARGS.peers, script, sock, *args, env=env)


def vufront(*args, timeout=60):
    return subprocess.run([ARGS.vufront, *args], capture_output=True, text=True, timeout=timeout)


def probe_py(sock, *args):
    out_json = sock + '.probe.json'
    r = subprocess.run([sys.executable, os.path.join(ARGS.peers, 'probe.py'), sock,
                        '--json', out_json, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, 'probe.py failed:\n' + r.stdout + r.stderr
    with open(out_json) as f:
        return json.load(f)


def probe_json(sock, *args):
    r = vufront('probe', sock, '--json', *args)
    assert r.returncode == 0, 'vufront probe exit %d: %s' % (r.returncode, r.stderr)
    return json.loads(r.stdout)


def bits(feature_set):
    """The mask of a feature set as vufront's JSON has it: {"bits": "0x...", "names": [...]}."""
    assert set(feature_set) == {'bits', 'names'}, feature_set
    return int(feature_set['bits'], 16)


def same_as_probe_py(ours, theirs):
    for key in ('features', 'protocol_features'):
        assert bits(ours[key]) == theirs[key], '%s: vufront %r, probe.py %r' % (key, ours[key], theirs[key])
    for key in ('queue_num', 'max_mem_slots'):
        assert ours[key] == theirs[key], '%s: vufront %r, probe.py %r' % (key, ours[key], theirs[key])


# ---- tests -------------------------------------------------------------------

def test_qsd_matches_probe_py(tmp):
    peer = peer_of('start-qsd-blk.sh', os.path.join(tmp, 'b.sock'), os.path.join(tmp, 'b.img'))
    try:
        ours = probe_json(peer.sock)
        theirs = probe_py(peer.sock)
    finally:
        peer.stop()
    same_as_probe_py(ours, theirs)
    assert ours['config'] == theirs['config_raw'], (ours['config'], theirs['config_raw'])
    features = bits(ours['features'])
    assert features & (1 << 32) and 'VERSION_1' in ours['features']['names']
    assert ours['config_decoded']['capacity'] == 131072  # sectors, a number
    assert ours['backend_channel'] is True
    # vufront acks only protocol features it implements, all of them offered
    offered, acked = bits(ours['protocol_features']), bits(ours['protocol_features_acked'])
    assert acked & ~offered == 0
    assert acked & (1 << 8) == 0, 'PAGEFAULT must not be acked'
    # the same rule as a device's negotiation: LOG_SHMFD only for dirty logging (probe does none)
    assert offered & (1 << 1), 'qemu-storage-daemon offers LOG_SHMFD'
    assert acked & (1 << 1) == 0, 'LOG_SHMFD must not be acked'


def test_qsd_four_queues(tmp):
    peer = peer_of('start-qsd-blk.sh', os.path.join(tmp, 'q.sock'), 'null',
                env={'QSD_NUM_QUEUES': '4'})
    try:
        ours = probe_json(peer.sock)
    finally:
        peer.stop()
    assert ours['queue_num'] == 4, ours['queue_num']
    assert ours['config_decoded']['num_queues'] == 4


def test_qsd_text_report_and_refused_config(tmp):
    peer = peer_of('start-qsd-blk.sh', os.path.join(tmp, 't.sock'), 'null')
    try:
        text = vufront('probe', peer.sock)
        # qsd 7.2 refuses GET_CONFIG larger than 60 bytes with a size-0 reply:
        # reported, not fatal, and the connection goes on (queues still read)
        big = probe_json(peer.sock, '--config-size', '96')
    finally:
        peer.stop()
    assert text.returncode == 0, text.stderr
    for needle in ('VERSION_1', 'PROTOCOL_FEATURES', 'REPLY_ACK', 'capacity', 'max mem slots'):
        assert needle in text.stdout, needle + ' missing from:\n' + text.stdout
    assert big['config'] is None and 'GET_CONFIG' in big['config_error'], big


def test_virtiofsd_matches_probe_py(tmp):
    share = os.path.join(tmp, 'share')
    os.mkdir(share)
    with open(os.path.join(share, 'hello.txt'), 'w') as f:
        f.write('hi\n')
    # virtiofsd serves a single connection: one instance per front-end
    peer = peer_of('start-virtiofsd.sh', os.path.join(tmp, 'f1.sock'), share)
    try:
        ours = probe_json(peer.sock, '--device', 'fs')
    finally:
        peer.stop()
    peer = peer_of('start-virtiofsd.sh', os.path.join(tmp, 'f2.sock'), share)
    try:
        theirs = probe_py(peer.sock, '--device', 'fs', '--no-reconnect')
    finally:
        peer.stop()
    same_as_probe_py(ours, theirs)
    assert ours['config'] is None and ours['queue_num'] == 2


def serve_once(path, behaviour):
    """A hostile 'back-end': accepts one connection and misbehaves."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    done = threading.Event()

    def run():
        try:
            srv.settimeout(30)
            conn, _ = srv.accept()
            behaviour(conn, done)
            conn.close()
        except OSError:
            pass
        finally:
            srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, done


def test_errors_and_exit_codes(tmp):
    missing = os.path.join(tmp, 'nothing.sock')
    r = vufront('probe', missing, '--timeout', '0.3')
    assert r.returncode == 1, r
    # nothing at the path: said at once (not after the timeout)
    assert len(r.stderr.strip().splitlines()) == 1 and 'no such file' in r.stderr, r.stderr

    r = vufront('probe')
    assert r.returncode == 2, r
    r = vufront('probe', missing, '--device', 'gpu')
    assert r.returncode == 2, r
    r = vufront('probe', missing, '--timeout', 'soon')
    assert r.returncode == 2, r
    r = vufront('--help')
    assert r.returncode == 0 and 'probe' in r.stdout, r
    r = vufront('probe', '--help')
    assert r.returncode == 0 and '--json' in r.stdout, r

    # accepts, then closes at once (QEMU's connect-fail case)
    path = os.path.join(tmp, 'closer.sock')
    t, _ = serve_once(path, lambda conn, done: None)
    r = vufront('probe', path, '--timeout', '2')
    t.join(10)
    assert r.returncode == 1, r
    assert 'GET_FEATURES' in r.stderr or 'SET_OWNER' in r.stderr, r.stderr
    assert 'disconnected' in r.stderr or 'Broken pipe' in r.stderr, r.stderr

    # accepts, reads, never answers: the deadline ends the wait
    path = os.path.join(tmp, 'silent.sock')

    def silent(conn, done):
        conn.settimeout(10)
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
    t, _ = serve_once(path, silent)
    r = vufront('probe', path, '--timeout', '0.5')
    t.join(15)
    assert r.returncode == 1, r
    assert 'GET_FEATURES: timeout' in r.stderr, r.stderr

    # answers GET_FEATURES with a reply for another request
    path = os.path.join(tmp, 'liar.sock')

    def liar(conn, done):
        conn.settimeout(10)
        import struct
        conn.recv(12)                      # SET_OWNER (no reply)
        conn.recv(12)                      # GET_FEATURES
        conn.sendall(struct.pack('<IIIQ', 2, 5, 8, 1 << 32))
    t, _ = serve_once(path, liar)
    r = vufront('probe', path, '--timeout', '2')
    t.join(15)
    assert r.returncode == 1, r
    assert 'GET_FEATURES: unexpected_reply' in r.stderr, r.stderr


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--peers', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-it-')


if __name__ == '__main__':
    sys.exit(main())
