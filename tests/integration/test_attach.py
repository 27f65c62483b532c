#!/usr/bin/env python3
"""`vufront attach` as a VMM uses it (docs/attach-protocol.md):

* vufront-example-vmm's whole flow (memory, activate, I/O, sleep, snapshot,
  restore, wake, data read back) against vufront-backend - restored into the
  same back-end, into a new one, with MSI-X - and against qemu-storage-daemon;
* the control socket's negatives: a uid that is not allowed, garbage,
  oversized messages, missing / unused / wrong fds, commands in the wrong
  state, a flood of commands, a VMM that disconnects in the middle of a
  command or while the device runs (left asleep, re-attach and wake);
* events: config change, back-end lost, shared memory handed to the VMM;
* a lost device: an oversized back-end request (backend-req-oversize), its
  sockets closed at once (the fd count), a step on it failing at once;
* reconnect: vufront-backend and qemu-storage-daemon killed and restarted
  under a VMM, a back-end with other features, a socket gone for a while (an
  attempt waits for it), client mode; --wait-for-backend at start;
* several devices, add_device / remove_device.

    test_attach.py --vufront build/bin/vufront --vmm build/bin/vufront-example-vmm
                   --backend build/bin/vufront-backend [--peers DIR] [-k NAME]
"""
import argparse
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

from runner import run_tests
from vubackend import Attach, Backends, Control, Peer, StderrLog, open_fds, run

ARGS = None
# A python any uid can run (the test's own may live under /root).
PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable


def ctl_path(tmp):
    return os.path.join(tmp, 'vufront.ctl')


def vmm(control, *args, timeout=120):
    return run(ARGS.vmm, '--control', control, *args, timeout=timeout)


def assert_vmm_ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'result: ok, the data matched' in r.stdout, r.stdout


def activate_one_queue_of(c, device):
    """set_memory + activate of one 64-entry queue of `device` (None: the
    only one); returns the fds to close."""
    ram = os.memfd_create('ram')
    os.ftruncate(ram, 2 << 20)
    kick, irq = os.eventfd(0), os.eventfd(0)
    c.ok('set_memory', {'regions': [{'gpa': '0x100000000', 'size': 2 << 20, 'fd': 0}]}, fds=[ram],
         device=device)
    c.ok('activate', {'features': 1 << 32, 'interrupt_fd': 1,
                      'queues': [{'index': 0, 'size': 64, 'desc': '0x100000000',
                                  'driver': '0x100000400', 'device': '0x100000800',
                                  'kick': 0}]}, fds=[kick, irq], device=device)
    return [ram, kick, irq]


def activate_one_queue(c):
    return activate_one_queue_of(c, None)


def activate_one_packed_queue(c):
    """activate_one_queue with VERSION_1 | RING_PACKED; returns the fds to close."""
    ram = os.memfd_create('ram')
    os.ftruncate(ram, 2 << 20)
    kick, irq = os.eventfd(0), os.eventfd(0)
    c.ok('set_memory', {'regions': [{'gpa': '0x100000000', 'size': 2 << 20, 'fd': 0}]}, fds=[ram])
    c.ok('activate', {'features': (1 << 32) | (1 << 34), 'interrupt_fd': 1,
                      'queues': [{'index': 0, 'size': 64, 'desc': '0x100000000',
                                  'driver': '0x100000400', 'device': '0x100000800',
                                  'kick': 0}]}, fds=[kick, irq])
    return [ram, kick, irq]


# ---- the example VMM's flow ---------------------------------------------------------

def test_example_vmm_same_backend_new_backend_and_msix(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        b = bs.start('b', '--size', '16M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att:
            r = vmm(att.control)
            assert_vmm_ok(r)
            for step in ('snapshot', 'reset', 'restore', 'wake', 'read back'):
                assert ('ok   ' + step) in r.stdout, (step, r.stdout)
            # the client library's on_progress: the transfer_progress events, the
            # last of each transfer whole (a snapshot's total is known at its end),
            # all of them before the step's reply
            out = r.stdout.splitlines()
            for op in ('snapshot', 'restore'):
                step = out.index(next(l for l in out if l.startswith('ok   ' + op + ' ')))
                at = [i for i, l in enumerate(out) if l.startswith('     ' + op + ' ')]
                events = [re.match(r'     %s (\d+) of (\d+|\?) bytes, \d+ ms, ETA (\d+ ms|\?)$' % op,
                                   out[i]) for i in at]
                assert events and all(events), (op, r.stdout)
                assert at[-1] == step - 1, (op, r.stdout)  # the last event, then the reply, none after
                assert events[-1].group(1) == events[-1].group(2) and events[-1].group(3) == '0 ms'
            # into a fresh back-end: its disk was zeros, so the data can only
            # have come from the snapshot
            r = vmm(att.control, '--restore-into', b.sock)
            assert_vmm_ok(r)
            assert 'ok   add_device' in r.stdout, r.stdout
            r = vmm(att.control, '--msix')
            assert_vmm_ok(r)
            assert 'MSI-X' in r.stdout, r.stdout
            assert att.stop() == 0
        assert not os.path.exists(ctl_path(tmp)), 'the control socket is removed at exit'


def qsd_files(tmp):
    """The socket and a 64 MiB image for a qemu-storage-daemon in `tmp`."""
    if not ARGS.peers:
        raise AssertionError('--peers is needed for qemu-storage-daemon')
    img = os.path.join(tmp, 'disk.img')
    with open(img, 'wb') as f:
        f.truncate(64 << 20)
    return os.path.join(tmp, 'qsd.sock'), img


def test_example_vmm_against_qemu_storage_daemon(tmp):
    sock, img = qsd_files(tmp)
    with Peer(ARGS.peers, 'start-qsd-blk.sh', sock, img):
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', sock) as att:
            r = vmm(att.control)
            assert_vmm_ok(r)
            assert 'skip snapshot/restore' in r.stdout, r.stdout  # qsd has no DEVICE_STATE
            assert 'ok   read back' in r.stdout, r.stdout
            # the client library's dirty log: libvhost-user marks what it writes
            r = vmm(att.control, '--dirty-log')
            assert_vmm_ok(r)
            assert 'ok   dirty log' in r.stdout, r.stdout
        # the data is in qemu-storage-daemon's image, at sector 8
        with open(img, 'rb') as f:
            f.seek(8 * 512)
            data = f.read(64 * 1024)
        assert any(data), 'nothing was written to the image'


def test_qemu_storage_daemon_restarted_under_a_vmm(tmp):
    """qemu-storage-daemon killed while a VMM's disk is active on it: vufront
    attach stays up, the device comes back by itself once qsd is restarted
    (no in-flight region: qsd 7.2 does not offer it, so the rings resume at
    the used index), and a VMM then does its whole flow on it."""
    sock, img = qsd_files(tmp)
    qsd = Peer(ARGS.peers, 'start-qsd-blk.sh', sock, img)
    try:
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', sock,
                    '--reconnect-max-delay', '0.2') as att, Control(att.control) as c:
            fds = activate_one_queue(c)
            assert c.ok('status')['inflight'] is False
            assert qsd.signal(signal.SIGKILL)
            assert qsd.wait_exit(10)
            e = c.wait_event('backend_lost')
            assert e['reason'], e
            e = c.wait_event('reconnecting')
            assert 'lost while active' in e['detail'], e
            qsd.stop()  # (its socket file goes before the new one is made)
            qsd = Peer(ARGS.peers, 'start-qsd-blk.sh', sock, img)
            e = c.wait_event('resumed')
            assert e['state'] == 'active' and 'at used index 0' in e['detail'], e
            st = c.ok('status')
            assert st['state'] == 'active' and st['reconnects'] == 1 and st['last_error'] == '', st
            c.ok('sleep')
            c.ok('wake')
            for fd in fds:
                os.close(fd)
            # a VMM's whole flow on the restarted qsd: I/O, sleep, wake, data read back
            r = vmm(att.control)
            assert_vmm_ok(r)
            assert 'ok   read back' in r.stdout, r.stdout
    finally:
        qsd.stop()


# ---- the control socket's negatives -----------------------------------------------------

def test_socket_mode_and_wrong_uid_refused(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att:
            mode = stat.S_IMODE(os.stat(att.control).st_mode)
            assert mode == 0o600, oct(mode)
            os.chmod(att.control, 0o666)  # let uid 65534 reach the uid check
            os.chmod(tmp, 0o755)
            probe = ('import socket, json\n'
                     's = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n'
                     's.connect(%r)\n'
                     'm = json.loads(s.recv(65536))\n'
                     'print(json.dumps(m))\n'
                     'print("closed" if s.recv(65536) == b"" else "open")\n') % att.control
            r = subprocess.run([PYTHON, '-c', probe], capture_output=True, text=True, timeout=30,
                               preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
            assert r.returncode == 0, r.stdout + r.stderr
            lines = r.stdout.splitlines()
            m = json.loads(lines[0])
            assert m['event'] == 'refused' and m['error']['code'] == 'permission_denied', m
            assert 'uid 65534' in m['error']['message'], m
            assert lines[1] == 'closed', lines
            att.wait_log('refused a connection from uid 65534')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', '65534') as att:
            # --allow-uid opens the socket to the allowed uid (0666; the uid check gates)
            assert stat.S_IMODE(os.stat(att.control).st_mode) == 0o666
            probe = ('import socket, json\n'
                     's = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n'
                     's.connect(%r)\n'
                     'print(json.loads(s.recv(65536))["event"])\n') % att.control
            r = subprocess.run([PYTHON, '-c', probe], capture_output=True, text=True, timeout=30,
                               preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
            assert r.stdout.strip() == 'hello', r.stdout + r.stderr


def test_garbage_huge_and_malformed_commands_change_nothing(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            assert c.greeting['event'] == 'hello' and c.greeting['protocol'] == 1, c.greeting
            before = c.ok('status')
            fds_before = open_fds(att.pid)
            cases = [
                (b'garbage', None, 'bad_message'),
                (b'[1, 2, 3]', None, 'bad_message'),
                (b'{"cmd": "status"}', None, 'bad_message'),                 # no id
                (b'{"id": 1}', 1, 'bad_message'),                            # no cmd
                (b'{"id": [1], "cmd": "status"}', None, 'bad_message'),      # id not a scalar
                (b'{"id": 2, "cmd": "status", "extra": 1}', 2, 'bad_message'),
                (b'{"id": 3, "cmd": "status", "args": [1]}', 3, 'bad_message'),
                (b'{"id": 4, "cmd": "status", "args": {"x": 1}}', 4, 'bad_message'),
                (b'{"id": 5, "cmd": "read_config", "args": {"offset": -1, "size": 4}}', 5, 'bad_message'),
                (b'{"id": 6, "cmd": "read_config", "args": {"offset": "zz", "size": 4}}', 6, 'bad_message'),
                (b'{"id": 7, "cmd": "no_such_command"}', 7, 'unknown_request'),
                (b'{"id": 8, "cmd": "status", "device": "nope"}', 8, 'not_found'),
                (b'{"id": 9, "cmd": "status", "device": "bad id!"}', 9, 'bad_message'),
                (b'{"id": "s", "cmd": "write_config", "args": {"offset": 0, "data": "abc"}}', 's', 'bad_message'),
                (b'\xff\xfe{not utf8', None, 'bad_message'),
            ]
            for data, id_, code in cases:
                c.send_raw(data)
                m = c.recv()
                assert m['ok'] is False and m['error']['code'] == code, (data, m)
                assert m['id'] == id_, (data, m)
            # a message larger than 64 KiB: refused as a whole, the connection goes on
            c.send_raw(b'{"id": 10, "cmd": "status", "args": {"pad": "' + b'x' * 70000 + b'"}}')
            m = c.recv()
            assert m['ok'] is False and m['error']['code'] == 'oversized' and m['id'] is None, m
            assert c.ok('status') == before
            assert open_fds(att.pid) == fds_before


def test_missing_unused_and_wrong_fds_are_refused_and_closed(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            c.ok('status')  # the session's reader runs from here on
            fds_before = open_fds(att.pid)
            mem = os.memfd_create('guest')
            os.ftruncate(mem, 4 << 20)
            region = {'gpa': '0x100000000', 'size': 4 << 20, 'fd': 0}
            # no fd at all
            c.error('set_memory', {'regions': [region]}, code='bad_fds')
            # an fd nobody refers to
            c.error('status', {}, fds=[mem], code='bad_fds')
            # the same fd twice
            two = dict(region, gpa='0x200000000')
            c.error('set_memory', {'regions': [region, dict(two, fd=0)]}, fds=[mem], code='bad_fds')
            # the wrong kind: a pipe as guest memory
            r, w = os.pipe()
            c.error('set_memory', {'regions': [region]}, fds=[r], code='bad_fds')
            # more fds than a message may carry: all closed
            many = [os.dup(mem) for _ in range(20)]
            c.error('status', {}, fds=many, code='bad_fds')
            for fd in many:
                os.close(fd)
            os.close(r)
            os.close(w)
            assert c.ok('status')['memory'] == []
            assert open_fds(att.pid) == fds_before, 'refused fds are closed'
            # and a good one works
            c.ok('set_memory', {'regions': [region]}, fds=[mem])
            assert len(c.ok('status')['memory']) == 1
            os.close(mem)


def test_commands_in_the_wrong_state(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            for cmd in ('wake', 'sleep'):
                e = c.error(cmd, code='bad_state')
                assert 'negotiated' in e['message'], e
            ev = os.eventfd(0)
            e = c.error('activate', {'features': 1 << 32, 'interrupt_fd': 1,
                                     'queues': [{'index': 0, 'size': 64, 'desc': '0x100000000',
                                                 'driver': '0x100000400', 'device': '0x100000800',
                                                 'kick': 0}]}, fds=[ev, ev], code='bad_state')
            assert 'set_memory first' in e['message'], e
            c.error('connect', code='bad_state')  # already connected
            c.error('snapshot', {'path': os.path.join(tmp, 's.vfsnap'), 'timeout': 0}, code='bad_message')
            assert c.ok('status')['state'] == 'negotiated'
            os.close(ev)


def test_a_flood_of_commands_gets_one_reply_each(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            n = 300
            # The VMM sends from one thread and reads in another, as it must:
            # vufront reads no more while its replies are not read.
            def flood():
                for i in range(n):
                    c.send_raw(json.dumps({'id': 1000 + i, 'cmd': 'status'}).encode())
            sender = threading.Thread(target=flood)
            sender.start()
            seen = {}
            while len(seen) < n:
                m = c.recv()
                if 'event' in m:
                    continue
                assert m['id'] not in seen, m
                seen[m['id']] = m
            sender.join(30)
            assert sorted(seen) == list(range(1000, 1000 + n))
            codes = {('ok' if m['ok'] else m['error']['code']) for m in seen.values()}
            assert codes <= {'ok', 'busy'}, codes
            assert c.ok('status')['state'] == 'negotiated'


def test_vmm_disconnects_mid_command_and_while_running(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M', '--delay-reply', 'GET_VRING_BASE:1500')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--timeout', '10') as att:
            # a VMM brings the device up and goes away while it runs
            with Control(att.control) as c:
                fds = activate_one_queue(c)
                assert c.ok('status')['state'] == 'active'
                # sleep takes 1.5 s (the back-end delays GET_VRING_BASE); leave mid-way
                c.send_raw(json.dumps({'id': 77, 'cmd': 'sleep'}).encode())
                a.wait_log('--delay-reply GET_VRING_BASE')
            att.wait_log('session 1: detached', timeout=15)
            with Control(att.control) as c:
                st = c.ok('status')
                assert st['state'] == 'sleeping', st   # the sleep was carried out
                c.ok('wake')
                assert c.ok('status')['state'] == 'active'
            # gone while active: put to sleep by vufront
            att.wait_log('no VMM attached, put to sleep', timeout=15)
            with Control(att.control) as c:
                assert c.ok('status')['state'] == 'sleeping'
                c.ok('wake')   # the rings resume with the fds vufront kept
                c.ok('sleep')
                c.ok('reset')
                assert c.ok('status')['state'] == 'negotiated'
            for fd in fds:
                os.close(fd)


def test_memory_regions_added_and_removed_while_active(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            fds = activate_one_queue(c)
            more = os.memfd_create('more')
            os.ftruncate(more, 1 << 20)
            # hot-add a region: the back-end gets ADD_MEM_REG (CONFIGURE_MEM_SLOTS)
            c.ok('add_memory_region', {'gpa': '0x200000000', 'size': 1 << 20, 'fd': 0}, fds=[more])
            assert [m['gpa'] for m in c.ok('status')['memory']] == [0x100000000, 0x200000000]
            a.wait_log('<- ADD_MEM_REG')
            # overlapping, or the region the rings are in: refused, nothing changes
            e = c.error('add_memory_region', {'gpa': '0x200080000', 'size': 1 << 20, 'fd': 0}, fds=[more])
            assert e['code'] == 'invalid_argument', e
            e = c.error('remove_memory_region', {'gpa': '0x100000000'}, code='invalid_argument')
            assert 'rings' in e['message'], e
            c.error('remove_memory_region', {'gpa': '0x300000000'}, code='invalid_argument')
            c.ok('remove_memory_region', {'gpa': '0x200000000'})
            a.wait_log('<- REM_MEM_REG')
            assert [m['gpa'] for m in c.ok('status')['memory']] == [0x100000000]
            assert c.ok('status')['state'] == 'active'
            for fd in fds + [more]:
                os.close(fd)


# ---- events, shared memory, several devices --------------------------------------------

def test_events_config_change_and_backend_lost(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--no-reconnect') as att, \
                Control(att.control) as c:
            os.kill(a.proc.pid, signal.SIGUSR1)
            e = c.wait_event('config_changed')
            assert e['device'] == 'disk0', e
            a.proc.kill()
            e = c.wait_event('backend_lost')
            assert e['device'] == 'disk0' and e['reason'], e
            c.wait_event('state_changed', state='broken')
            st = c.ok('status')
            assert st['state'] == 'broken' and st['last_error'], st
            # a new back-end on the same socket: reset, connect
            a.stop()
            os.unlink(a.sock) if os.path.exists(a.sock) else None
            bs.start('a', '--size', '4M')
            c.ok('reset')
            info = c.ok('connect')
            assert info['kind'] == 'blk', info
            assert c.ok('status')['state'] == 'negotiated'


def test_short_form_packed_vring_base_is_normalised_and_said_once(tmp):
    # DPDK's librte_vhost answers a packed ring's GET_VRING_BASE with bits
    # 0-15 only; vufront-backend --short-vring-base does the same
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--short-vring-base')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, \
                Control(att.control) as c:
            fds = activate_one_packed_queue(c)
            try:
                for _ in range(2):
                    c.ok('sleep')
                    st = c.ok('status')
                    # a fresh ring: both wrap counters 1, both indices 0 (0x8000 answered)
                    assert st['queues'][0]['base'] == 0x80008000, st
                    assert len(st['notices']) == 1 and 'short form' in st['notices'][0], st
                    c.ok('wake')
                e = c.wait_event('backend_notice')
                assert e['device'] == 'disk0' and 'taken as 0x80008000' in e['detail'], e
                assert not [x for x in c.events if x.get('event') == 'backend_notice'], c.events
                att.wait_log('disk0: the back-end answers GET_VRING_BASE for packed rings in the '
                             'short form')
                assert sum('short form' in line for line in att.log) == 1, att.log_text()
            finally:
                for fd in fds:
                    os.close(fd)
def names_the_oversized_request(text):
    """The loss names the back-end request and the reason."""
    return ('back-end channel' in text and 'CONFIG_CHANGE_MSG' in text and 'oversized' in text)


def test_oversized_backend_request_loses_the_device_naming_it(tmp):
    """backend-req-oversize: the back-end sends a back-end request whose header
    announces more body than the channel allows, while it holds read_config's
    GET_CONFIG. With --no-reconnect the device is broken at once: the command
    fails naming the request and the reason, the event and the log say it, the
    back-end sees its channel closed. With reconnect (the default) the device
    reconnects (the fault is at the first GET_CONFIG only) and reads its config."""
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--backend-req-oversize', 'GET_CONFIG')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--no-reconnect') as att, \
                Control(att.control) as c:
            e = c.error('read_config', {'offset': 0, 'size': 8}, code='broken')
            assert names_the_oversized_request(e['message']), e
            ev = c.wait_event('backend_lost', device='disk0')
            assert names_the_oversized_request(ev['reason']), ev
            c.wait_event('state_changed', state='broken')
            att.wait_log('disk0: back-end lost: back-end channel: BACKEND_CONFIG_CHANGE_MSG')
            a.wait_log('the front-end closed the back-end channel')
            st = c.ok('status')
            assert st['state'] == 'broken' and names_the_oversized_request(st['last_error']), st
        b = bs.start('b', '--size', '4M', '--backend-req-oversize', 'GET_CONFIG')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', b.sock,
                    '--reconnect-max-delay', '0.2') as att, Control(att.control) as c:
            e = c.error('read_config', {'offset': 0, 'size': 8}, code='broken')
            assert names_the_oversized_request(e['message']), e
            ev = c.wait_event('backend_lost', device='disk0')
            assert names_the_oversized_request(ev['reason']), ev
            c.wait_event('reconnecting')
            e = c.wait_event('resumed')
            assert e['state'] == 'negotiated', e
            b.wait_log('the front-end closed the back-end channel')
            assert c.ok('read_config', {'offset': 0, 'size': 8})['data'], 'config after the resume'


def wait_fds(pid, want, timeout=20):
    """Waits (deadline loop) until process `pid` has `want` fds open; the
    count it has at the end."""
    deadline = time.monotonic() + timeout
    n = open_fds(pid)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.05)
        n = open_fds(pid)
    return n


def test_lost_device_closes_its_socket_and_channel_at_once(tmp):
    """attach --no-reconnect: a device whose back-end is lost closes its
    vhost-user socket and back-end channel at once (not when attach stops):
    the fd count of attach returns to what it was before the device was
    added, for a hang at GET_CONFIG (the request's deadline), an oversized
    back-end request and a killed back-end."""
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        hang = bs.start('hang', '--size', '4M', '--delay-reply', 'GET_CONFIG:60000')
        over = bs.start('over', '--size', '4M', '--backend-req-oversize', 'GET_CONFIG')
        dies = bs.start('dies', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--no-reconnect',
                    '--timeout', '1') as att, Control(att.control) as c:
            assert c.ok('status')['state'] == 'negotiated'
            baseline = open_fds(att.pid)
            for name, backend in (('hang', hang), ('over', over), ('dies', dies)):
                c.ok('add_device', {'id': name, 'backend': backend.sock})
                c.wait_event('device_added', device=name)
                assert open_fds(att.pid) > baseline, 'the connected device holds fds'
                if name == 'dies':
                    backend.proc.kill()
                else:
                    c.error('read_config', {'offset': 0, 'size': 8}, device=name)
                ev = c.wait_event('backend_lost', device=name)
                assert ev['reason'], ev
                assert c.ok('status', device=name)['state'] == 'broken'
                n = wait_fds(att.pid, baseline)
                assert n == baseline, (name, n, baseline, os.listdir('/proc/%d/fd' % att.pid))
            assert c.ok('status', device='disk0')['state'] == 'negotiated'  # untouched


def test_a_step_on_a_lost_device_fails_at_once_naming_the_loss(tmp):
    """attach --no-reconnect with a request deadline of 10 minutes: after the
    back-end was killed, every step fails at once (a wait would run into the
    control socket's 10 s), with `broken`, naming the loss."""
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--no-reconnect',
                    '--timeout', '600', '--drain-timeout', '600') as att, \
                Control(att.control) as c:
            fds = activate_one_queue(c)
            a.proc.kill()
            ev = c.wait_event('backend_lost')
            for cmd, args in (('read_config', {'offset': 0, 'size': 8}), ('sleep', None),
                              ('write_config', {'offset': 32, 'data': '01'}),
                              ('snapshot', {'path': os.path.join(tmp, 's.vfsnap')})):
                e = c.error(cmd, args, code='broken')
                assert e['message'].startswith(cmd + ': '), e
                assert 'the back-end was lost: ' + ev['reason'] in e['message'], (e, ev)
            assert c.ok('status')['state'] == 'broken'
            c.ok('reset')  # and it can be reset and connected again
            for fd in fds:
                os.close(fd)


def test_backend_restarted_the_device_resumes_by_itself(tmp):
    img = os.path.join(tmp, 'disk.img')
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--image', img)
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock,
                    '--reconnect-max-delay', '0.2') as att, Control(att.control) as c:
            fds = activate_one_queue(c)
            assert c.ok('status')['inflight'] is True  # the back-end records requests in flight
            a.proc.kill()
            e = c.wait_event('backend_lost')
            assert e['reason'], e
            e = c.wait_event('reconnecting')
            assert 'lost while active' in e['detail'], e
            bs.start('a', '--size', '4M', '--image', img)
            e = c.wait_event('resumed')
            assert e['state'] == 'active' and 'at used index 0' in e['detail'], e
            st = c.ok('status')
            assert st['state'] == 'active' and st['reconnects'] == 1 and st['last_error'] == '', st
            b = bs.started[-1]
            b.wait_log('<- SET_INFLIGHT_FD')
            att.wait_log('resumed')
            # it comes back without the features the driver acked: refused, and why
            b.proc.kill()
            c.wait_event('backend_lost')
            b.stop()
            wrong = bs.start('a', '--size', '4M', '--image', img, '--refuse-feature', 'VERSION_1')
            e = c.wait_event('resume_failed')
            assert 'no longer offers virtio features 0x100000000' in e['reason'], e
            st = c.ok('status')
            assert st['state'] == 'broken' and 'cannot resume' in st['last_error'], st
            e = c.error('sleep', code='broken')  # at once, naming the loss
            assert 'cannot resume' in e['message'], e
            # the operator fixes the back-end and asks for a retry
            wrong.stop()
            bs.start('a', '--size', '4M', '--image', img)
            c.ok('reconnect')
            e = c.wait_event('resumed')
            assert c.ok('status')['state'] == 'active'
            c.error('reconnect', code='bad_state')  # nothing to do now
            c.ok('sleep')
            c.ok('wake')
            for fd in fds:
                os.close(fd)


def test_reconnect_waits_for_a_backend_whose_socket_is_gone_for_a_while(tmp):
    # A first connect to a missing socket fails at once; a reconnect attempt
    # must not: a restarting back-end removes its socket and makes it anew.
    img = os.path.join(tmp, 'disk.img')
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--image', img)
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--timeout', '1',
                    '--reconnect-max-delay', '0.2') as att, Control(att.control) as c:
            fds = activate_one_queue(c)
            a.stop()  # a clean exit: its socket file goes with it
            assert not os.path.exists(a.sock)
            c.wait_event('backend_lost')
            e = c.wait_event('reconnecting')
            assert 'first attempt' in e['detail'], e
            # the first attempt waited its whole connect timeout for the socket
            e = c.wait_event('reconnecting', timeout=30)
            assert 'attempt 1 failed' in e['detail'], e
            assert 'no back-end accepted before the deadline: nothing is at the path (no such file)' \
                in e['detail'], e
            assert 'not_found' not in e['detail'], e
            bs.start('a', '--size', '4M', '--image', img)
            e = c.wait_event('resumed', timeout=30)
            assert e['state'] == 'active', e
            c.ok('sleep')
            c.ok('wake')
            for fd in fds:
                os.close(fd)


def test_wait_for_backend_at_start(tmp):
    sock = os.path.join(tmp, 'later.sock')
    proc = subprocess.Popen([ARGS.vufront, 'attach', '--control', ctl_path(tmp), '--backend', sock,
                             '--wait-for-backend', '--timeout', '30'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = StderrLog(proc.stderr)
    try:
        with Backends(ARGS.backend, tmp) as bs:
            log.expect('disk0: waiting up to 30 s for a back-end to listen at ' + sock +
                       ' (now: no such file)')
            assert proc.poll() is None, ''.join(log)
            bs.start('later')
            log.expect(' serving disk0 (blk, ' + sock + ')', timeout=30)
            with Control(ctl_path(tmp)) as c:
                assert c.ok('status')['state'] == 'negotiated'
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, ''.join(log)


def test_client_mode_the_backend_connects_to_vufront(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        sock = os.path.join(tmp, 'a.sock')
        # first the back-end (it retries while nobody listens), then vufront
        a = bs.start('a', '--size', '4M', '--connect', ready='connecting to')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', sock, '--client-mode',
                    '--reconnect-max-delay', '0.2') as att, Control(att.control) as c:
            assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
            fds = activate_one_queue(c)
            os.kill(a.proc.pid, signal.SIGHUP)  # it drops us and connects again
            c.wait_event('backend_lost')
            e = c.wait_event('resumed')
            assert e['state'] == 'active', e
            # the socket is taken: a second vufront cannot listen there
            r = run(ARGS.vufront, 'attach', '--control', ctl_path(tmp) + '2', '--backend', sock,
                    '--client-mode', '--timeout', '0.5', timeout=30)
            assert r.returncode == 1 and 'another process listens on this socket' in r.stderr, r.stderr
            assert c.ok('status')['state'] == 'active'
            for fd in fds:
                os.close(fd)
        assert not os.path.exists(sock)  # the listening socket went with vufront


def test_shared_memory_requests_go_to_the_owning_vmm(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--shmem-size', '1M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            region = c.ok('shared_memory_region')
            assert region['size'] > 0, region
            c.ok('set_shmem_owner', {'owner': 'vmm'})
            assert c.ok('status')['shmem_owner'] == 'vmm'
            os.kill(a.proc.pid, signal.SIGUSR2)       # the back-end maps its window
            e = c.wait_event('shmem_map')
            assert e['device'] == 'disk0' and e['len'] > 0 and len(e.get('_fds', [])) == 1, e
            os.close(e['_fds'][0])
            os.kill(a.proc.pid, signal.SIGUSR2)       # and unmaps it
            e = c.wait_event('shmem_unmap')
            assert e['len'] > 0, e
            # a second VMM may not take it over
            with Control(att.control) as other:
                other.error('set_shmem_owner', {'owner': 'vmm'}, code='bad_state')
            c.ok('set_shmem_owner', {'owner': 'vufront'})
            assert c.ok('status')['shmem_owner'] == 'vufront'


def test_dirty_log_start_resize_and_stop_over_the_control_socket(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            fds = activate_one_queue(c)
            r = c.call('dirty_log_start')
            assert r['ok'] is True, r
            # one bit per 4 KiB page up to the memory's end (0x100200000), in 64-bit words
            pages = 0x100200000 // 4096
            assert r['result'] == {'fd': 0, 'size': (pages + 63) // 64 * 8}, r
            assert len(r.get('_fds', [])) == 1, r
            log = r['_fds'][0]
            assert os.fstat(log).st_size == r['result']['size']
            a.wait_log('<- SET_LOG_BASE')
            a.wait_log('<- SET_VRING_ADDR')
            # on a running device: SET_LOG_BASE, then LOG_ALL, then the ring's LOG flag
            text = a.log_text()
            at_base = text.rfind('<- SET_LOG_BASE')
            at_features = text.find('<- SET_FEATURES', at_base)
            at_addr = text.find('<- SET_VRING_ADDR', at_features)
            assert at_base < at_features < at_addr, text[at_base:]
            # the same log again
            again = c.call('dirty_log_start')
            assert again['result'] == r['result'], again
            for fd in again.get('_fds', []):
                os.close(fd)
            # memory beyond the log: a bigger one, as an event with its fd, before the reply
            more = os.memfd_create('more')
            os.ftruncate(more, 1 << 20)
            c.ok('add_memory_region', {'gpa': '0x200000000', 'size': 1 << 20, 'fd': 0}, fds=[more])
            e = c.wait_event('dirty_log_resized')
            assert e['size'] == (0x200100000 // 4096 + 63) // 64 * 8, e
            assert len(e.get('_fds', [])) == 1, e
            assert os.fstat(e['_fds'][0]).st_size == e['size']
            assert c.ok('status')['dirty_log'] == e['size']
            c.ok('dirty_log_stop')
            c.ok('dirty_log_stop')  # nothing when it is off
            st = c.ok('status')
            assert st['state'] == 'active' and st['dirty_log'] is None, st
            for fd in fds + [more, log] + e['_fds']:
                os.close(fd)


def test_example_vmm_dirty_log_and_a_backend_that_forgets_to_log(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '16M')
        f = bs.start('f', '--size', '16M', '--forget-log')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att:
            r = vmm(att.control, '--dirty-log')
            assert_vmm_ok(r)
            assert re.search(r'ok   dirty log .* page\(s\) marked, the \d+ written among them; stopped',
                             r.stdout), r.stdout
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', f.sock) as att:
            r = vmm(att.control, '--dirty-log')
            assert r.returncode == 1, r.stdout + r.stderr
            m = re.search(r'FAIL dirty log .*pages the back-end wrote are not in the log: (0x[0-9a-f]+)',
                          r.stdout)
            assert m, r.stdout


def test_dirty_log_without_reply_ack_is_synced_with_get_features(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--refuse-feature', 'REPLY_ACK')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            fds = activate_one_queue(c)
            a.wait_log('<- SET_VRING_KICK')  # the bring-up's lines are all read
            before = a.log_text().count('<- GET_FEATURES')
            r = c.call('dirty_log_start')
            assert r['ok'] is True, r
            fds += r['_fds']
            a.wait_log('<- SET_LOG_BASE')
            # one more GET_FEATURES, after the rings' LOG flag
            assert a.log.wait_count('<- GET_FEATURES', before + 1), a.log_text()
            text = a.log_text()
            at_addr = text.find('<- SET_VRING_ADDR', text.rfind('<- SET_LOG_BASE'))
            assert at_addr >= 0 and text.find('<- GET_FEATURES', at_addr) > at_addr, text
            c.ok('dirty_log_stop')
            for fd in fds:
                os.close(fd)


def test_dirty_log_refused_on_packed_rings_and_without_the_features(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M', '--packed')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att, Control(att.control) as c:
            fds = activate_one_packed_queue(c)
            e = c.error('dirty_log_start', code='invalid_argument')
            assert 'packed rings' in e['message'], e
            for fd in fds:
                os.close(fd)
        b = bs.start('b', '--size', '4M', '--refuse-feature', 'LOG_SHMFD')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', b.sock) as att, Control(att.control) as c:
            e = c.error('dirty_log_start', code='not_negotiated')
            assert 'LOG_SHMFD' in e['message'], e


def test_several_devices_add_and_remove(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        n = bs.start('n', '--device', 'net', '--queues', '2')
        extra = bs.start('x', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', 'disk=' + a.sock, '--backend',
                    'nic=' + n.sock, '--device', 'nic=net', '--queues', 'nic=2') as att, \
                Control(att.control) as c:
            ids = [d['id'] for d in c.greeting['devices']]
            assert ids == ['disk', 'nic'], c.greeting
            e = c.error('status', code='not_found')
            assert 'disk' in e['message'] and 'nic' in e['message'], e
            assert c.ok('status', device='nic')['kind'] == 'net'
            assert c.ok('status', device='disk')['kind'] == 'blk'
            c.error('add_device', {'id': 'disk', 'backend': extra.sock}, code='invalid_argument')
            info = c.ok('add_device', {'id': 'disk2', 'backend': extra.sock})
            assert info['kind'] == 'blk', info
            c.wait_event('device_added', device='disk2')
            assert [d['id'] for d in c.ok('hello')['devices']] == ['disk', 'disk2', 'nic']
            c.ok('remove_device', {'id': 'disk2'})
            c.error('status', device='disk2', code='not_found')
            c.error('add_device', {'id': 'bad', 'backend': os.path.join(tmp, 'none.sock')})


def threads_with_devices(tmp, n):
    """The threads of `vufront attach` serving n active devices (one
    queue each, interrupts forwarded through vufront), each against its own
    vufront-backend."""
    with Backends(ARGS.backend, tmp) as bs:
        socks = [bs.start('t%d-%d' % (n, i), '--size', '1M').sock for i in range(n)]
        args = []
        for i, s in enumerate(socks):
            args += ['--backend', 'd%d=%s' % (i, s)]
        with Attach(ARGS.vufront, ctl_path(tmp), *args, timeout=60) as att, Control(att.control) as c:
            fds = []
            for i in range(n):
                fds += activate_one_queue_of(c, 'd%d' % i)
            assert all(c.ok('status', device='d%d' % i)['state'] == 'active' for i in range(n))
            threads = len(os.listdir('/proc/%d/task' % att.pid))
            for fd in fds:
                os.close(fd)
            return threads


def test_threads_do_not_grow_with_devices(tmp):
    # Every device's waits (its connection steps, hang-up and interrupt
    # watches, back-end channel) are tasks on one event loop.
    one = threads_with_devices(tmp, 1)
    many = threads_with_devices(tmp, 32)
    assert many == one, 'threads: %d with 1 device, %d with 32' % (one, many)


def test_sighup_is_logged_and_ignored_sigterm_stops_cleanly(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att:
            att.proc.send_signal(signal.SIGHUP)
            att.wait_log('SIGHUP: ignored')
            with Control(att.control) as c:  # still serving
                assert c.ok('status')['state'] == 'negotiated'
            att.proc.send_signal(signal.SIGTERM)
            assert att.wait_exit(30) == 0, ''.join(att.log)
            assert att.log.has('stopped')
            assert not os.path.exists(att.control)


def test_usage_errors_exit_2_and_unreachable_backend_exits_1(tmp):
    for args in ([], ['--control', ctl_path(tmp)], ['--backend', '/x.sock'],
                 ['--backend', '/x.sock', '--control', ctl_path(tmp), '--device', 'gpu'],
                 ['--backend', 'a=/x.sock', '--backend', 'a=/y.sock', '--control', ctl_path(tmp)],
                 ['--backend', '/x.sock', '--control', ctl_path(tmp), '--queues', 'zz=2']):
        r = run(ARGS.vufront, 'attach', *args, timeout=30)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    r = run(ARGS.vufront, 'attach', '--backend', os.path.join(tmp, 'none.sock'), '--control',
            ctl_path(tmp), '--timeout', '0.3', timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'disk0: ' in r.stderr and 'connect' in r.stderr, r.stderr
    assert 'no such file' in r.stderr, r.stderr  # said at once, not after the timeout
    assert not os.path.exists(ctl_path(tmp))
    assert 'attach' in run(ARGS.vufront, 'attach', '--help').stdout


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--vmm', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--peers')
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    return run_tests(globals(), ARGS.k, prefix='vufront-attach-')


if __name__ == '__main__':
    sys.exit(main())
