#!/usr/bin/env python3
"""Integration tests of vufront-backend, the reference vhost-user back-end.

The independent Python front-end shared/peers/probe.py drives real I/O
through it; the fault switches, --once, signals, SHMEM and DEVICE_STATE are
checked from here. Each test starts its own back-end and stops it by pid in
a `finally`. No sleeps: waits are on pipes, log lines and process exits, with deadlines.

    test_backend.py --backend build/bin/vufront-backend --peers ../shared/peers [-k NAME]
"""
import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from runner import run_tests
from vubackend import Backend

ARGS = None


def start_backend(tmp, *args, name='b.sock'):
    """vufront-backend on tmp/name with `args`, ready once it listens; the
    caller stops it by pid (stop() in a finally)."""
    return Backend(ARGS.backend, os.path.join(tmp, name), *args)


def probe(sock, *args, expect_ok=True):
    out_json = sock + '.probe.json'
    if os.path.exists(out_json):
        os.unlink(out_json)
    r = subprocess.run([sys.executable, os.path.join(ARGS.peers, 'probe.py'), sock,
                        '--json', out_json, '--timeout', '5', *args],
                       capture_output=True, text=True, timeout=120)
    if expect_ok:
        assert r.returncode == 0, 'probe.py failed:\n' + r.stdout + r.stderr
    st = {}
    if os.path.exists(out_json):
        with open(out_json) as f:
            st = json.load(f)
    return r, st


# ---- a tiny raw front-end for what probe.py does not send --------------------

class Raw:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)

    def send(self, req, payload=b'', fds=(), flags=0x1):
        socket.send_fds(self.s, [struct.pack('<III', req, flags, len(payload)) + payload], list(fds))

    def recv(self, req):
        hdr = self._exact(12)
        r, flags, size = struct.unpack('<III', hdr)
        assert r == req and flags == 0x5, (r, flags)
        return self._exact(size)

    def _exact(self, n):
        b = b''
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise ConnectionError('back-end closed the connection')
            b += chunk
        return b

    def u64(self, req):
        self.send(req)
        return struct.unpack('<Q', self.recv(req))[0]

    def setup(self, proto_bits):
        self.send(3)                                        # SET_OWNER
        feats = self.u64(1)
        self.send(2, struct.pack('<Q', feats & ((1 << 30) | (1 << 32))))
        self.send(16, struct.pack('<Q', proto_bits))
        return feats

    def close(self):
        self.s.close()


def drain(fd, sink):
    """Reads fd to EOF into the list sink (thread body)."""
    with os.fdopen(fd, 'rb') as f:
        while True:
            b = f.read(1 << 16)
            if not b:
                return
            sink.append(b)


# ---- tests --------------------------------------------------------------------

def test_io_reconnect_and_unknown_request(tmp):
    b = start_backend(tmp)
    try:
        _, st = probe(b.sock, '--io', '--unknown')
    finally:
        b.stop()
    assert st['read_matches'] and st['serial'] == 'vufront-backend', st
    assert st['read_used_len'] == 4097, st
    assert st['vring_base'] == {'0': 4}, st['vring_base']
    assert st['reconnect_ok'] is True
    assert st['unknown_request'].startswith('connection dropped'), st['unknown_request']
    assert st['alive_after_unknown'] is True
    assert 'SET_VRING_KICK' in st['acked_requests']


def test_io_inflight(tmp):
    b = start_backend(tmp)
    try:
        _, st = probe(b.sock, '--io', '--inflight')
    finally:
        b.stop()
    assert st['protocol_acked'] >> 12 & 1
    assert st['inflight']['fds'] == 1 and st['inflight']['mmap_size'] > 0, st['inflight']
    assert 'SET_INFLIGHT_FD' in st['acked_requests']


def test_io_add_mem_reg(tmp):
    b = start_backend(tmp)
    try:
        _, st = probe(b.sock, '--io', '--add-mem-reg')
    finally:
        b.stop()
    assert st['read_matches']


def test_four_queues(tmp):
    b = start_backend(tmp, '--queues', '4')
    try:
        _, st = probe(b.sock, '--io')
    finally:
        b.stop()
    assert st['queue_num'] == 4
    assert st['config']['num_queues'] == 4
    assert st['features'] >> 12 & 1, 'blk MQ must be offered with 4 queues'


def test_image_file(tmp):
    img = os.path.join(tmp, 'disk.img')
    b = start_backend(tmp, '--image', img, '--size', '1M')
    try:
        probe(b.sock, '--io')
    finally:
        b.stop()
    with open(img, 'rb') as f:
        data = f.read()
    assert len(data) == 1 << 20
    assert data[8 * 512:8 * 512 + 4096] == bytes((i * 7 + 0x5a) & 0xff for i in range(4096))


def test_close_at_get_features(tmp):
    b = start_backend(tmp, '--close-at', 'GET_FEATURES')
    try:
        r, _ = probe(b.sock, '--no-reconnect', expect_ok=False)
        assert r.returncode != 0, r.stdout
        _, st = probe(b.sock)                  # second GET_FEATURES is answered
        assert st['features'] >> 32 & 1
    finally:
        b.stop()
    assert '--close-at GET_FEATURES' in b.log_text()


def test_close_at_nth(tmp):
    b = start_backend(tmp, '--close-at', '1:2')    # the 2nd GET_FEATURES
    try:
        probe(b.sock, '--no-reconnect')
        r, _ = probe(b.sock, '--no-reconnect', expect_ok=False)
        assert r.returncode != 0
    finally:
        b.stop()


def test_crash_at_set_mem_table(tmp):
    b = start_backend(tmp, '--crash-at', 'SET_MEM_TABLE')
    try:
        r, _ = probe(b.sock, '--io', '--no-reconnect', expect_ok=False)
        assert r.returncode != 0
        status = b.wait_exit(10)
        assert status is not None and status != 0, status
        assert os.path.exists(b.sock), 'a crash must not clean up the socket'
    finally:
        b.stop()


def test_delay_reply(tmp):
    b = start_backend(tmp, '--delay-reply', 'GET_QUEUE_NUM:700')
    try:
        t0 = time.monotonic()
        probe(b.sock, '--no-reconnect')
        slow = time.monotonic() - t0
    finally:
        b.stop()
    assert slow >= 0.7, slow


def test_refuse_features(tmp):
    b = start_backend(tmp, '--refuse-feature', 'REPLY_ACK', '--refuse-feature', 'FLUSH', '--no-packed')
    try:
        _, st = probe(b.sock, '--io')
    finally:
        b.stop()
    assert not st['protocol_features'] >> 3 & 1
    assert not st['features'] >> 9 & 1 and not st['features'] >> 34 & 1
    assert 'flush_status' not in st and st['read_matches']


def test_once_exits_after_one_client(tmp):
    b = start_backend(tmp, '--once')
    try:
        probe(b.sock, '--no-reconnect')
        assert b.wait_exit(10) == 0
        assert not os.path.exists(b.sock)
    finally:
        b.stop()


def test_sigterm_removes_socket(tmp):
    pidfile = os.path.join(tmp, 'pid')
    b = start_backend(tmp, '--pidfile', pidfile)
    try:
        with open(pidfile) as f:
            assert int(f.read()) == b.proc.pid
        b.proc.send_signal(signal.SIGTERM)
        assert b.wait_exit(10) == 0
        assert not os.path.exists(b.sock) and not os.path.exists(pidfile)
    finally:
        b.stop()


def test_socket_path_taken_is_left_alone(tmp):
    """--socket on a file with data, or on a live back-end's socket: refused
    with a clear error, the file and the live back-end untouched; a stale
    socket (its back-end gone) is replaced."""
    path = os.path.join(tmp, 'data')
    with open(path, 'w') as f:
        f.write('precious\n')
    r = subprocess.run([ARGS.backend, '--socket', path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert 'is not a socket (left as it is)' in r.stderr, r.stderr
    with open(path) as f:
        assert f.read() == 'precious\n'
    first = start_backend(tmp, name='live.sock')
    try:
        r = subprocess.run([ARGS.backend, '--socket', first.sock], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1, r.stderr
        assert 'another process listens on this socket already' in r.stderr, r.stderr
        probe(first.sock, '--no-reconnect')  # the first one still serves
        first.proc.kill()  # leaves a stale socket file behind
        first.proc.wait(10)
        assert os.path.exists(first.sock)
        again = start_backend(tmp, name='live.sock')
        try:
            probe(again.sock, '--no-reconnect')
        finally:
            again.stop()
    finally:
        first.stop()


def test_shmem_map_on_start(tmp):
    b = start_backend(tmp, '--shmem-size', '1M')
    try:
        # MQ REPLY_ACK BACKEND_REQ CONFIG STATUS SHMEM
        _, st = probe(b.sock, '--io', '--proto', hex(1 | 8 | 32 | 512 | (1 << 16) | (1 << 22)))
    finally:
        b.stop()
    assert st['protocol_features'] >> 22 & 1
    msgs = st.get('backend_channel_msgs', [])
    assert any(m.startswith('9 ') and 'fds=1' in m and 'flags=0x9' in m for m in msgs), msgs
    assert 'refused' not in b.log_text()


def test_device_state_save_and_load(tmp):
    src = start_backend(tmp, '--size', '4M', name='src.sock')
    dst = start_backend(tmp, '--size', '4M', name='dst.sock')
    try:
        proto = (1 << 19) | (1 << 3)            # DEVICE_STATE, REPLY_ACK
        c = Raw(src.sock)
        c.setup(proto)
        assert c.u64(43) != 0, 'no transfer yet: CHECK_DEVICE_STATE must fail'
        rd, wr = os.pipe()
        chunks = []
        t = threading.Thread(target=drain, args=(rd, chunks))
        t.start()
        c.send(42, struct.pack('<II', 0, 0), fds=[wr])
        os.close(wr)
        assert struct.unpack('<Q', c.recv(42))[0] == 0x100
        t.join(30)
        state = b''.join(chunks)
        assert state[:8] == b'VUFBKST2' and struct.unpack_from('<I', state, 8)[0] == 2
        assert len(state) > 4 << 20
        assert c.u64(43) == 0
        c.close()

        d = Raw(dst.sock)
        d.setup(proto)
        for data, ok in ((state[:-1], False), (state, True)):
            rd, wr = os.pipe()
            d.send(42, struct.pack('<II', 1, 0), fds=[rd])
            os.close(rd)
            assert struct.unpack('<Q', d.recv(42))[0] == 0x100
            with os.fdopen(wr, 'wb') as f:
                f.write(data)
            assert (d.u64(43) == 0) == ok
        d.close()
    finally:
        src.stop()
        dst.stop()


def test_net_echo(tmp):
    b = start_backend(tmp, '--device', 'net', '--queues', '2')
    try:
        _, st = probe(b.sock, '--device', 'net', '--io')
    finally:
        b.stop()
    assert st['echo_matches'] and st['rx_len'] == 12 + 60, st
    assert st['queue_num'] == 4 and st['features'] >> 22 & 1, 'net: 2 pairs = 4 vrings, MQ'
    assert st['config'] == {'mac': '52:54:00:12:34:56', 'status': 1,
                            'max_virtqueue_pairs': 2, 'mtu': 0}, st['config']
    assert 'net: tx 1, rx 1' in b.log_text(), b.log_text()


def test_device_option_checks(tmp):
    def usage(*args):
        r = subprocess.run([ARGS.backend, '--socket', os.path.join(tmp, 'u.sock'), *args],
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stderr
    assert usage('--device', 'scsi')[0] == 2
    for args in (('--device', 'net', '--queues', '33'), ('--device', 'net', '--size', '1M'),
                 ('--device', 'net', '--shmem-size', '1M'), ('--mac', '52:54:00:12:34:56'),
                 ('--device', 'net', '--mac', '01:00:5e:00:00:01'),
                 ('--device', 'net', '--mac', '52:54:00:12:34')):
        rc, err = usage(*args)
        assert rc == 2 and 'vufront-backend' in err, (args, rc, err)
    r = subprocess.run([ARGS.backend, '--help'], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and 'queue PAIRS' in r.stdout and 'net' in r.stdout, r.stdout


def test_state_fault_option_checks(tmp):
    def usage(*args):
        r = subprocess.run([ARGS.backend, '--socket', os.path.join(tmp, 'u.sock'), *args],
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stderr
    for opt in ('--state-crash-after', '--state-stall-after'):
        for bad in ('12X', '', 'K', '-1', '99999999999999999999G'):
            rc, err = usage(opt, bad)
            assert rc == 2 and opt in err and 'bad size' in err, (opt, bad, rc, err)
    rc, err = usage('--state-crash-after', '1M', '--state-stall-after', '1M')
    assert rc == 2 and 'excludes' in err, (rc, err)
    r = subprocess.run([ARGS.backend, '--help'], capture_output=True, text=True, timeout=30)
    for opt in ('--state-own-fd', '--state-endless', '--state-crash-after', '--state-stall-after'):
        assert opt in r.stdout, (opt, r.stdout)


def test_malformed_requests_drop_connection(tmp):
    b = start_backend(tmp)
    try:
        for req, payload in ((2, b'\0' * 4),                      # SET_FEATURES short
                             (8, struct.pack('<II', 7, 8)),        # vring index out of range
                             (5, struct.pack('<II', 9, 0))):       # 9 regions
            c = Raw(b.sock)
            c.setup(0)
            c.send(req, payload)
            try:
                c.u64(1)
                raise AssertionError('request %d %r was accepted' % (req, payload))
            except (ConnectionError, OSError):
                pass
            c.close()
        c = Raw(b.sock)
        assert c.u64(1) >> 32 & 1                                   # still serving
        c.close()
    finally:
        b.stop()


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--peers', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-be-')


if __name__ == '__main__':
    sys.exit(main())
