#!/usr/bin/env python3
"""Unmodified QEMU drives vufront through its own vhost-user device
(`vufront attach --vmm-socket`, docs/vmm-proxy.md), with a real Linux guest.

QEMU 7.2 (TCG) -> vufront's VMM socket -> vufront -> the back-end:
* blk through qemu-storage-daemon, 2 queues and 2 vCPUs: the guest writes a
  pattern from each vCPU, syncs, drops its caches and reads it back; the
  image holds it; vufront saw I/O on both queues and one VMM connection;
* blk through vufront-backend with packed=on: QEMU set RING_PACKED (bit 34),
  and `status` shows the live session while the guest runs;
* virtio-fs through virtiofsd: the guest mounts the tag, reads a file the
  test wrote and writes one back; virtiofsd exits when vufront renews its
  connection after QEMU left, and vufront goes on waiting for it;
* QEMU SIGKILLed mid-run: vufront stays up, stops the back-end's rings and
  removes the dead VM's memory; no fd or mapping of its memory is left in
  vufront; a second QEMU boots and works through the same socket;
* vufront SIGKILLed under a running guest and started again: QEMU
  (reconnect=1) comes back once, replays its set-up, the guest goes on;
* the guest reboots itself and writes again; QMP stop/cont in the middle;
* a scripted VMM that leaves while a snapshot is saved: once the save ends
  (or is cancelled)
  the back-end connection is renewed and the back-end unmaps its memory;
* a scripted VMM with 9 regions added by ADD_MEM_REG: replayed as 9
  ADD_MEM_REG into the back-end's next connection;
* a malformed VMM (bad sizes, fds, indices, unoffered features, a ring
  started in no memory): errors or a closed connection, no crash, no fd leak.

Without QEMU, a cloud kernel or a static busybox the guest tests exit 77
(ctest: skipped) naming what is missing; ./run.sh test installs them.

    test_vmm_proxy.py --vufront build/bin/vufront --backend build/bin/vufront-backend \\
        --peers ../shared/peers [-k NAME]
"""
import argparse
import json
import os
import socket
import struct
import sys

import guest
from runner import run_tests
from vubackend import Attach, Backend, Control, Peer, open_fds

ARGS = None
PREREQ = None
GUEST_LIMIT = 90  # seconds a guest may take (about 5-10 s when it works)
PATTERN_SECTORS = {0: 2048, 1: 4096}  # vCPU -> first sector it writes
WANTED_MODULES = ['virtio_pci', 'virtio_blk']
FS_MODULES = ['virtio_pci', 'virtiofs']  # virtiofs needs fuse, virtio_ring, virtio
FS_TAG = 'vufront'
FS_HELLO = 'VUFRONT-FS-HELLO from the host 0123456789'
FS_REPLY = 'VUFRONT-FS-REPLY from the guest 9876543210'


# ---- the guest ------------------------------------------------------------------

def io_body(then='poweroff -f', cpus=2):
    """The guest's work: from each of `cpus` vCPUs write 64 KiB of pattern at
    its own sector (with one queue per vCPU, every queue carries I/O), sync,
    drop the caches, read each back and compare; then `then`."""
    places = {c: s for c, s in PATTERN_SECTORS.items() if c < cpus}
    lines = [guest.wait_for_block('/dev/vda'),
             'i=0; while [ $i -lt 2048 ]; do echo "VUFRONT-PATTERN-line-$i-0123456789abcdef"; '
             'i=$((i + 1)); done | head -c 65536 > /pattern']
    for cpu, sector in places.items():
        lines.append('taskset %d dd if=/pattern of=/dev/vda bs=512 seek=%d conv=fsync 2>/dev/null '
                     '|| echo "VUFRONT-GUEST-FAIL write cpu %d"' % (1 << cpu, sector, cpu))
    lines += ['sync', 'echo 3 > /proc/sys/vm/drop_caches']
    for cpu, sector in places.items():
        lines.append('taskset %d dd if=/dev/vda of=/back%d bs=512 skip=%d count=128 2>/dev/null; '
                     'cmp /pattern /back%d && echo "VUFRONT-GUEST-READBACK %d" '
                     '|| echo "VUFRONT-GUEST-FAIL readback cpu %d"' % (1 << cpu, cpu, sector, cpu, cpu, cpu))
    lines += ['echo VUFRONT-GUEST-DONE', then, '']
    return '\n'.join(lines)


def pattern():
    text = b''.join(b'VUFRONT-PATTERN-line-%d-0123456789abcdef\n' % i for i in range(2048))
    return text[:65536]


def initrd(tmp, body, name='initrd.cpio', modules=None):
    path = os.path.join(tmp, name)
    _, _, version, busybox = PREREQ
    guest.build_initramfs(path, version, busybox, modules or WANTED_MODULES, body)
    return path


def fs_body():
    """The guest's work on virtio-fs: mount the tag (retried while the
    driver probes), print the host's file, write one back, unmount."""
    return '''n=0
while ! mount -t virtiofs %(tag)s /mnt 2>/tmp-mount-error; do
  n=$((n + 1))
  if [ $n -gt 300 ]; then echo "VUFRONT-GUEST-FAIL mount $(cat /tmp-mount-error)"; poweroff -f; fi
  sleep 0.1
done
echo "VUFRONT-GUEST-READ $(cat /mnt/hello.txt)"
echo "%(reply)s" > /mnt/from-guest.txt || echo "VUFRONT-GUEST-FAIL write"
sync
umount /mnt || echo "VUFRONT-GUEST-FAIL umount"
echo VUFRONT-GUEST-DONE
poweroff -f
''' % {'tag': FS_TAG, 'reply': FS_REPLY}


def boot(tmp, vmm_sock, rd, device_opts='', smp=2, qmp=None, reboot=False,
         device='vhost-user-blk-pci', reconnect=True):
    qemu, kernel, _, _ = PREREQ
    return guest.Qemu(qemu, kernel, rd,
                      ['-chardev', 'socket,id=c0,path=%s%s' % (vmm_sock, ',reconnect=1' if reconnect else ''),
                       '-device', device + ',chardev=c0' + device_opts],
                      smp=smp, qmp=qmp, reboot=reboot)


def report(q, attach=None):
    return ('QEMU exit %s\n--- console:\n%s\n--- QEMU stderr:\n%s\n--- vufront:\n%s' %
            (q.proc.returncode, q.console_text()[-4000:], q.stderr_text()[-2000:],
             ''.join(attach.log[-80:]) if attach else ''))


def run_to_end(q, attach):
    code = q.wait_exit(GUEST_LIMIT)
    rep = report(q, attach)
    assert code is not None, 'the guest did not finish in %d s\n%s' % (GUEST_LIMIT, rep)
    console = q.console_text()
    assert 'VUFRONT-GUEST-BOOTED' in console, rep
    assert 'VUFRONT-GUEST-FAIL' not in console, rep
    assert 'VUFRONT-GUEST-DONE' in console, rep
    assert code == 0, rep
    assert not [l for l in q.stderr_text().splitlines()
                if 'vhost' in l and ('fail' in l.lower() or 'error' in l.lower())], rep
    return rep


def image_has_pattern(image, cpus=2):
    with open(image, 'rb') as f:
        for cpu, sector in PATTERN_SECTORS.items():
            if cpu >= cpus:
                continue
            f.seek(sector * 512)
            if f.read(65536) != pattern():
                return False
    return True


def vmm_status(ctl, device='disk0'):
    return ctl.ok('status', device=device)['vmm']


def wait_session_over(ctl, device='disk0', timeout=30):
    """Waits for the session's vmm_disconnected event (sent once vufront has
    undone the VMM's set-up) and returns the status then."""
    ctl.wait_event('vmm_disconnected', timeout=timeout, device=device)
    v = vmm_status(ctl, device)
    assert not v['connected'] and not v['tearing_down'], v
    return v


def qsd(tmp, queues=2):
    if not ARGS.peers:
        raise AssertionError('--peers is needed for qemu-storage-daemon')
    img = os.path.join(tmp, 'disk.img')
    with open(img, 'wb') as f:
        f.truncate(64 << 20)
    return Peer(ARGS.peers, 'start-qsd-blk.sh', os.path.join(tmp, 'qsd.sock'), img,
                env={'QSD_NUM_QUEUES': str(queues)}), img


def attach(tmp, backend_sock, *extra):
    return Attach(ARGS.vufront, os.path.join(tmp, 'ctl.sock'), '--backend', 'disk0=' + backend_sock,
                  '--vmm-socket', 'disk0=' + os.path.join(tmp, 'vmm.sock'), *extra)


# ---- the tests ------------------------------------------------------------------

def test_guest_blk_through_qsd_two_queues(tmp):
    peer, img = qsd(tmp)
    with peer, attach(tmp, peer.sock, '--queues', '2') as a, Control(a.control) as ctl:
        with boot(tmp, os.path.join(tmp, 'vmm.sock'), initrd(tmp, io_body()),
                  ',num-queues=2') as q:
            rep = run_to_end(q, a)
        assert image_has_pattern(img), rep
        v = wait_session_over(ctl)
        assert v['connections'] == 1, (v, rep)  # QEMU connected once, as vufront counted
        session = v['last_session']
        queues = {qu['index']: qu for qu in session['queues']}
        for i in (0, 1):  # I/O on both queues: the back-end moved each ring
            assert max(queues[i].get('used_index', 0), queues[i]['base']) > 0, (v, rep)
        assert 'MQ' in session['protocol_features'].split('|'), v  # QEMU acked MQ for its 2 queues


GO_SECTOR = 100  # the host writes GO_MARK there to let a waiting guest power off
GO_MARK = b'VUFRONT-GO'


def wait_for_go():
    """Guest lines: say it waits, then read sector GO_SECTOR (O_DIRECT,
    through the device) until the host wrote GO_MARK there (up to 60 s)."""
    return '''echo VUFRONT-GUEST-WAITING
n=0
until [ "$(dd if=/dev/vda bs=512 skip=%d count=1 iflag=direct 2>/dev/null | head -c %d)" = "%s" ]; do
  n=$((n + 1))
  if [ $n -gt 600 ]; then echo "VUFRONT-GUEST-FAIL no go from the host"; break; fi
  sleep 0.1
done
''' % (GO_SECTOR, len(GO_MARK), GO_MARK.decode())


def test_guest_packed_rings_through_reference_backend(tmp):
    image = os.path.join(tmp, 'ref.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
    with Backend(ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image) as b, \
            attach(tmp, b.sock) as a, Control(a.control) as ctl:
        body = io_body(cpus=1, then=wait_for_go() + 'poweroff -f')
        with boot(tmp, os.path.join(tmp, 'vmm.sock'), initrd(tmp, body), ',packed=on', smp=1) as q:
            # While the guest runs (it waits for the host's go), `status`
            # shows the live session: one VMM, packed rings, its ring started.
            assert q.wait_console('VUFRONT-GUEST-WAITING', GUEST_LIMIT), report(q, a)
            v = vmm_status(ctl)
            assert v['connected'] and v['connections'] == 1 and v['peer_uid'] == os.geteuid(), v
            live = v['session']
            assert int(live['features'], 16) & (1 << 34), ('QEMU did not set RING_PACKED', v)
            assert live['regions'], v
            ring0 = [qu for qu in live['queues'] if qu['index'] == 0][0]
            assert ring0['started'] and ring0['enabled'], v
            assert 'used_index' not in ring0, v  # a packed ring has none in guest memory
            assert ctl.ok('status', device='disk0')['state'] == 'negotiated'  # vufront's own view
            for cmd in ('sleep', 'wake', 'reset'):  # commands that would fight the VMM
                e = ctl.error(cmd, device='disk0', code='bad_state')
                assert 'driven by the VMM socket' in e['message'], (cmd, e)
            with open(image, 'r+b') as f:
                f.seek(GO_SECTOR * 512)
                f.write(GO_MARK)
            rep = run_to_end(q, a)
        assert image_has_pattern(image, cpus=1), rep
        v = wait_session_over(ctl)
        assert v['connections'] == 1, v
        features = int(v['last_session']['features'], 16)
        assert features & (1 << 34), ('QEMU did not set RING_PACKED', v, rep)


def test_guest_qemu_killed_then_a_second_qemu(tmp):
    peer, img = qsd(tmp)
    with peer, attach(tmp, peer.sock, '--queues', '2') as a, Control(a.control) as ctl:
        vmm_status(ctl)  # the device's children have set up (the worker's watch starts after 'serving')
        base_fds, base_memfds = open_fds(a.pid), guest.memfd_fds(a.pid)
        before = fd_list(a.pid)
        busy = io_body(then='while true; do echo VUFRONT-GUEST-LOOP; '
                            'dd if=/pattern of=/dev/vda bs=512 seek=8192 conv=fsync 2>/dev/null; done')
        vmm_sock = os.path.join(tmp, 'vmm.sock')
        with boot(tmp, vmm_sock, initrd(tmp, busy), ',num-queues=2') as q:
            assert q.wait_console('VUFRONT-GUEST-LOOP', GUEST_LIMIT), report(q, a)
            assert vmm_status(ctl)['connected']
            q.kill()
        v = wait_session_over(ctl)
        assert a.proc.poll() is None, 'vufront attach died with its VMM'
        # every fd and mapping of the dead VM's memory is gone from vufront
        assert guest.memfd_fds(a.pid) == base_memfds, ''.join(a.log[-40:])
        assert guest.memfd_maps(a.pid) == 0
        guest.wait_until(lambda: open_fds(a.pid) == base_fds, 10,
                         'vufront\'s fds to come back to %d:\n%s\nbefore:\n%s' % (base_fds, fd_list(a.pid), before))
        log = a.log_text()
        assert 'its rings were stopped and the back-end connection renewed' in log, log
        # a second QEMU starts fresh through the same socket and works
        with boot(tmp, vmm_sock, initrd(tmp, io_body(), 'second.cpio'), ',num-queues=2') as q2:
            rep = run_to_end(q2, a)
        assert image_has_pattern(img), rep
        assert wait_session_over(ctl)['connections'] == 2


def reboot_body():
    """The guest's work across a reboot: the first boot leaves a marker and
    reboots; the second finds it, writes the pattern (io_body) and powers off."""
    return guest.wait_for_block('/dev/vda') + '''
mark=$(dd if=/dev/vda bs=512 skip=64 count=1 2>/dev/null | head -c 12)
if [ "$mark" = "VUFRONT-BOOT" ]; then
  echo VUFRONT-GUEST-SECOND-BOOT
''' + io_body(cpus=1) + '''
fi
printf VUFRONT-BOOT | dd of=/dev/vda bs=512 seek=64 conv=sync,fsync 2>/dev/null
sync
echo VUFRONT-GUEST-REBOOTING
reboot -f
'''


def test_guest_reboot_and_stop_cont(tmp):
    peer, img = qsd(tmp, queues=1)
    # First boot: write the pattern, then reboot; the second boot finds the
    # first one's marker, writes again and powers off.
    body = reboot_body()
    with peer, attach(tmp, peer.sock) as a, Control(a.control) as ctl:
        qmp = os.path.join(tmp, 'qmp.sock')
        with boot(tmp, os.path.join(tmp, 'vmm.sock'), initrd(tmp, body), smp=1, qmp=qmp,
                  reboot=True) as q:
            assert q.wait_console('VUFRONT-GUEST-SECOND-BOOT', GUEST_LIMIT), report(q, a)
            q.qmp('stop')   # the rings stop mid-I/O, their bases go round QEMU
            q.qmp('cont')
            rep = run_to_end(q, a)
        assert 'VUFRONT-GUEST-REBOOTING' in q.console_text(), rep
        assert image_has_pattern(img, cpus=1), rep
        assert wait_session_over(ctl)['connections'] == 1, rep  # one connection across both


def test_guest_virtiofs_through_virtiofsd(tmp):
    if not ARGS.peers:
        raise AssertionError('--peers is needed for virtiofsd')
    shared = os.path.join(tmp, 'shared')
    os.mkdir(shared)
    with open(os.path.join(shared, 'hello.txt'), 'w') as f:
        f.write(FS_HELLO + '\n')
    fs_sock = os.path.join(tmp, 'virtiofsd.sock')
    vmm_sock = os.path.join(tmp, 'vmm.sock')
    with Peer(ARGS.peers, 'start-virtiofsd.sh', fs_sock, shared) as fsd:
        a = Attach(ARGS.vufront, os.path.join(tmp, 'ctl.sock'), '--backend', 'fs0=' + fs_sock,
                   '--device', 'fs0=fs', '--vmm-socket', 'fs0=' + vmm_sock)
        with a, Control(a.control) as ctl:
            # No reconnect=N: QEMU 7.2's vhost-user-fs neither waits for the
            # chardev to connect (with reconnect=N it connects in the
            # background and realize fails: "Failed to set msg fds") nor
            # reconnects; a plain client chardev connects before realize.
            with boot(tmp, vmm_sock, initrd(tmp, fs_body(), modules=FS_MODULES),
                      ',tag=' + FS_TAG, smp=1, device='vhost-user-fs-pci', reconnect=False) as q:
                rep = run_to_end(q, a)
            assert 'VUFRONT-GUEST-READ ' + FS_HELLO in q.console_text(), rep
            with open(os.path.join(shared, 'from-guest.txt')) as f:
                assert f.read() == FS_REPLY + '\n', rep
            # QEMU left: vufront stops the rings and renews its back-end
            # connection (docs/vmm-proxy.md, "The four ways"). virtiofsd
            # serves one front-end connection and exits when it closes, so
            # the renewal finds nobody and the device waits for a back-end.
            v = wait_session_over(ctl, 'fs0')
            assert v['connections'] == 1, (v, rep)
            session = v['last_session']
            assert {qu['index'] for qu in session['queues']} == {0, 1}, v  # hiprio + one request queue
            assert max(session['queues'][1].get('used_index', 0), session['queues'][1]['base']) > 0, v
            assert fsd.wait_exit(10), 'virtiofsd still runs after vufront renewed its connection'
            a.log.expect('renewing the back-end connection failed', 10)
            assert a.proc.poll() is None, 'vufront attach died with its back-end'
            state = ctl.ok('status', device='fs0')['state']
            assert state in ('reconnecting', 'lost'), state
        assert a.proc.returncode == 0, ''.join(a.log[-40:])  # stopped cleanly by SIGINT


LATE_ROUNDS = '''
i=0
while [ $i -lt 40 ]; do
  i=$((i + 1))
  dd if=/pattern of=/dev/vda bs=512 seek=8192 conv=fsync 2>/dev/null || echo "VUFRONT-GUEST-FAIL round $i"
  echo VUFRONT-GUEST-ROUND-$i
done
dd if=/dev/vda of=/back-late bs=512 skip=8192 count=128 iflag=direct 2>/dev/null
cmp /pattern /back-late && echo VUFRONT-GUEST-LATE-SAME || echo "VUFRONT-GUEST-FAIL late readback"
poweroff -f'''


def test_guest_survives_a_vufront_restart(tmp):
    """vufront is killed under a running guest and started again on the same
    sockets: QEMU (chardev reconnect=1) reconnects by itself and replays its
    set-up; the guest goes on."""
    peer, img = qsd(tmp, queues=1)
    vmm_sock = os.path.join(tmp, 'vmm.sock')
    with peer:
        first = attach(tmp, peer.sock)
        try:
            with boot(tmp, vmm_sock, initrd(tmp, io_body(cpus=1, then=LATE_ROUNDS)), smp=1) as q:
                assert q.wait_console('VUFRONT-GUEST-ROUND-3', GUEST_LIMIT), report(q, first)
                first.proc.kill()
                first.stop()
                with attach(tmp, peer.sock) as second, Control(second.control) as ctl:
                    code = q.wait_exit(GUEST_LIMIT)
                    rep = report(q, second)
                    console = q.console_text()
                    assert code == 0, rep
                    assert 'VUFRONT-GUEST-FAIL' not in console, rep
                    assert 'VUFRONT-GUEST-LATE-SAME' in console, rep
                    assert vmm_status(ctl)['connections'] == 1, rep  # QEMU came back once
            assert image_has_pattern(img, cpus=1)
        finally:
            first.stop()


# ---- a malformed VMM --------------------------------------------------------------

def vu_send(s, req, body=b'', fds=(), flags=1):
    data = struct.pack('<III', req, flags, len(body)) + body
    if fds:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack('%di' % len(fds), *fds))])
    else:
        s.sendall(data)


def vu_recv(s):
    head = s.recv(12, socket.MSG_WAITALL)
    if len(head) < 12:
        return None
    req, flags, size = struct.unpack('<III', head)
    body = s.recv(size, socket.MSG_WAITALL) if size else b''
    return req, flags, body


def vmm_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    return s


def closed_by_vufront(s):
    """True when vufront closed the connection (EOF or reset)."""
    try:
        return s.recv(1) == b''
    except ConnectionResetError:
        return True


def fd_list(pid):
    out = []
    for fd in sorted(os.listdir('/proc/%d/fd' % pid), key=int):
        try:
            link = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            if 'eventfd' in link:
                with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                    link += ' ' + ' '.join(l.strip() for l in f if 'count' in l or 'flags' in l)
            out.append('%s -> %s' % (fd, link))
        except OSError:
            pass
    return '\n'.join(out)


def test_malformed_vmm_requests(tmp):
    image = os.path.join(tmp, 'ref.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
    with Backend(ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image) as b, \
            attach(tmp, b.sock) as a, Control(a.control) as ctl:
        vmm_sock = os.path.join(tmp, 'vmm.sock')

        def good_session():  # a VMM that behaves gets its answers
            s = vmm_connect(vmm_sock)
            vu_send(s, 1)
            req, flags, body = vu_recv(s)
            assert req == 1 and flags == 0x5 and len(body) == 8, (req, flags, body)
            offered, = struct.unpack('<Q', body)
            # the reference back-end logs: LOG_ALL goes to the VMM (live migration)
            assert offered & (1 << 26), 'LOG_ALL not offered to the VMM'
            assert not offered & (1 << 33), 'ACCESS_PLATFORM offered to the VMM'
            s.close()
            wait_session_over(ctl, timeout=20)

        # the baseline after a first session (and a status, which the device
        # answers after its children have set up)
        good_session()
        vmm_status(ctl)
        base = open_fds(a.pid)
        base_list = fd_list(a.pid)
        memfd = os.memfd_create('guest')
        os.ftruncate(memfd, 1 << 20)
        efd = os.eventfd(0)
        cases = {
            'bad flags': lambda s: vu_send(s, 1, flags=0x5),
            'unknown request': lambda s: vu_send(s, 999),
            'GET_FEATURES with a body': lambda s: vu_send(s, 1, b'\0' * 8),
            'SET_VRING_NUM index too high': lambda s: vu_send(s, 8, struct.pack('<II', 4096, 256)),
            'SET_VRING_NUM of 0': lambda s: vu_send(s, 8, struct.pack('<II', 0, 0)),
            'SET_VRING_KICK without its fd': lambda s: vu_send(s, 12, struct.pack('<Q', 0)),
            'SET_VRING_CALL with two fds': lambda s: vu_send(s, 13, struct.pack('<Q', 0), [efd, efd]),
            'unoffered feature (ACCESS_PLATFORM)': lambda s: vu_send(s, 2, struct.pack('<Q', 1 << 33)),
            'SET_LOG_BASE without LOG_SHMFD acked': lambda s: vu_send(s, 6, struct.pack('<QQ', 4096, 0), [memfd]),
            'SET_LOG_BASE past the end of its file': lambda s: (
                vu_send(s, 16, struct.pack('<Q', 1 << 1)),  # SET_PROTOCOL_FEATURES: LOG_SHMFD
                vu_send(s, 6, struct.pack('<QQ', 2 << 20, 0), [memfd])),
            'SET_LOG_BASE without its fd': lambda s: (
                vu_send(s, 16, struct.pack('<Q', 1 << 1)),
                vu_send(s, 6, struct.pack('<QQ', 4096, 0))),
            'SET_MEM_TABLE of 0 regions': lambda s: vu_send(s, 5, struct.pack('<II', 0, 0)),
            'SET_MEM_TABLE region count lies': lambda s: vu_send(
                s, 5, struct.pack('<II', 2, 0) + struct.pack('<QQQQ', 0, 1 << 20, 0x7f0000000000, 0), [memfd]),
            'a ring started in no memory': lambda s: (
                vu_send(s, 9, struct.pack('<IIQQQQ', 0, 0, 0x1000, 0x2000, 0x3000, 0)),
                vu_send(s, 12, struct.pack('<Q', 0), [efd])),
            'oversized body': lambda s: vu_send(s, 24, b'\0' * 5000),
        }
        for name, send in cases.items():
            s = vmm_connect(vmm_sock)
            try:
                send(s)
                assert closed_by_vufront(s), name
            finally:
                s.close()
            wait_session_over(ctl, timeout=20)
            assert a.proc.poll() is None, name
            said = vmm_status(ctl)['last_disconnect']
            assert 'refused' in said or 'not proxied' in said or 'oversized' in said or \
                'fds' in said, (name, said)
        good_session()  # still answered after all that
        os.close(memfd)
        os.close(efd)
        try:
            guest.wait_until(lambda: open_fds(a.pid) == base, 20, 'vufront\'s fds to come back')
        except AssertionError:
            raise AssertionError('vufront has %d fds, %d before:\n%s\nbefore:\n%s' %
                                 (open_fds(a.pid), base, fd_list(a.pid), base_list))
        v = vmm_status(ctl)
        assert v['connections'] == len(cases) + 2, v


def vmm_leaves_during_a_snapshot(tmp, cancel):
    """A VMM that leaves while a snapshot of its device is being saved: once
    the save ends (`cancel`: cancelled), vufront renews the back-end
    connection, so the back-end no longer maps the dead VM's memory, and the
    vmm_disconnected event says so only then."""
    image = os.path.join(tmp, 'ref.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
    # the back-end holds its answer to CHECK_DEVICE_STATE: the save is in
    # progress until then, and the VMM leaves meanwhile
    with Backend(ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image,
                 '--delay-reply', 'CHECK_DEVICE_STATE:3000') as b, \
            attach(tmp, b.sock) as a, Control(a.control) as ctl:
        s = vmm_connect(os.path.join(tmp, 'vmm.sock'))
        memfd = os.memfd_create('dead-vm')
        try:
            os.ftruncate(memfd, 1 << 20)
            vu_send(s, 1)  # GET_FEATURES
            req, _, body = vu_recv(s)
            assert req == 1 and len(body) == 8, (req, body)
            vu_send(s, 2, struct.pack('<Q', 1 << 32))  # SET_FEATURES: VERSION_1
            vu_send(s, 5, struct.pack('<II', 1, 0) + struct.pack('<QQQQ', 0, 1 << 20, 0x7f0000000000, 0),
                    [memfd])  # SET_MEM_TABLE: one region
            vu_send(s, 1)  # answered once the two before it went through
            assert vu_recv(s)[0] == 1
            guest.wait_until(lambda: guest.memfd_maps(b.proc.pid) > 0, 20, 'the back-end to map the VM\'s memory')
        finally:
            os.close(memfd)
        snap = ctl.next_id
        ctl.next_id += 1
        ctl.send_raw(json.dumps({'id': snap, 'cmd': 'snapshot', 'device': 'disk0',
                                 'args': {'path': os.path.join(tmp, 's.vfsnap')}}).encode())
        b.wait_log('--delay-reply CHECK_DEVICE_STATE', 20)
        s.close()  # the VMM leaves during the save
        if cancel:
            ctl.send_raw(json.dumps({'id': snap + 1000, 'cmd': 'cancel', 'device': 'disk0'}).encode())
        replies = {}
        while len(replies) < (2 if cancel else 1):
            m = ctl.recv()
            if 'event' in m:
                ctl.events.append(m)
            elif m.get('id') in (snap, snap + 1000):
                replies[m['id']] = m
        r = replies[snap]
        if cancel:
            assert replies[snap + 1000]['ok'] is True, replies
            assert r['ok'] is False and r['error']['code'] == 'cancelled', r
        else:
            assert r['ok'] is True, r
        ev = ctl.wait_event('vmm_disconnected', timeout=20, device='disk0')
        said = json.dumps(ev)
        assert 'renewed' in said and 'waited for the snapshot' in said, ev
        v = vmm_status(ctl)
        assert not v['connected'] and not v['tearing_down'], v
        guest.wait_until(lambda: guest.memfd_maps(b.proc.pid) == 0, 20,
                         'the back-end to unmap the dead VM\'s memory:\n' + b.log_text())
        assert a.proc.poll() is None


def test_scripted_vmm_leaves_during_a_snapshot(tmp):
    vmm_leaves_during_a_snapshot(tmp, cancel=False)


def test_scripted_vmm_leaves_during_a_snapshot_then_cancelled(tmp):
    vmm_leaves_during_a_snapshot(tmp, cancel=True)


def test_scripted_vmm_nine_regions_replayed_with_add_mem_reg(tmp):
    """A VMM that negotiated CONFIGURE_MEM_SLOTS and added 9 regions with
    ADD_MEM_REG (more than SET_MEM_TABLE carries): when the back-end drops its
    connection, vufront replays the regions into the new one as 9 ADD_MEM_REG
    and the VMM goes on."""
    image = os.path.join(tmp, 'ref.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
    with Backend(ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image,
                 '--close-at', 'SET_VRING_NUM:1') as b, \
            attach(tmp, b.sock, '--reconnect-max-delay', '0.2') as a, Control(a.control) as ctl:
        s = vmm_connect(os.path.join(tmp, 'vmm.sock'))
        mems = []
        try:
            vu_send(s, 1)  # GET_FEATURES
            assert vu_recv(s)[0] == 1
            vu_send(s, 15)  # GET_PROTOCOL_FEATURES
            req, _, body = vu_recv(s)
            offered, = struct.unpack('<Q', body)
            assert offered & (1 << 15), 'CONFIGURE_MEM_SLOTS not offered: %#x' % offered
            vu_send(s, 16, struct.pack('<Q', 1 << 15))  # SET_PROTOCOL_FEATURES: CONFIGURE_MEM_SLOTS
            vu_send(s, 2, struct.pack('<Q', (1 << 32) | (1 << 30)))  # SET_FEATURES: VERSION_1, PROTOCOL_FEATURES
            vu_send(s, 36)  # GET_MAX_MEM_SLOTS
            req, _, body = vu_recv(s)
            assert req == 36 and struct.unpack('<Q', body)[0] >= 9, (req, body)
            for i in range(9):
                m = os.memfd_create('vm-region-%d' % i)
                mems.append(m)
                os.ftruncate(m, 1 << 20)
                vu_send(s, 37, struct.pack('<Q', 0) +
                        struct.pack('<QQQQ', i << 21, 1 << 20, 0x7f0000000000 + (i << 21), 0), [m])
            vu_send(s, 8, struct.pack('<II', 0, 128))  # SET_VRING_NUM: the back-end drops its connection
            ev = ctl.wait_event('vmm_resumed', timeout=30, device='disk0')
            vu_send(s, 1)  # the VMM is still served
            assert vu_recv(s)[0] == 1, ev
        finally:
            for m in mems:
                os.close(m)
        # 9 from the VMM, 9 in the replay (its stderr is read by a thread)
        guest.wait_until(lambda: b.log_text().count('<- ADD_MEM_REG') >= 18, 20,
                         'the 9 ADD_MEM_REG of the replay:\n' + b.log_text())
        log = b.log_text()
        assert log.count('<- ADD_MEM_REG') == 18, log
        assert '<- SET_MEM_TABLE' not in log, log
        v = vmm_status(ctl)
        assert v['connected'] and v['resumes'] == 1, v
        s.close()
        wait_session_over(ctl, timeout=20)
        assert a.proc.poll() is None


def test_scripted_vmm_closes_right_after_its_answer(tmp):
    """The answer to a forwarded request reaches the VMM before vufront has
    recorded the request in the VMM's shadow, and the VMM's next message is
    read meanwhile: a VMM that closes its socket right after the ack of its
    SET_MEM_TABLE still has that table recorded (its last session shows the
    region) and taken out of the back-end (the connection renewed)."""
    image = os.path.join(tmp, 'ref.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
    with Backend(ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image) as b, \
            attach(tmp, b.sock) as a, Control(a.control) as ctl:
        for round_ in range(5):
            s = vmm_connect(os.path.join(tmp, 'vmm.sock'))
            memfd = os.memfd_create('vm-%d' % round_)
            try:
                os.ftruncate(memfd, 1 << 20)
                vu_send(s, 15)  # GET_PROTOCOL_FEATURES
                assert vu_recv(s)[0] == 15
                vu_send(s, 16, struct.pack('<Q', 1 << 3))  # SET_PROTOCOL_FEATURES: REPLY_ACK
                vu_send(s, 5, struct.pack('<II', 1, 0) + struct.pack('<QQQQ', 0, 1 << 20, 0x7f0000000000, 0),
                        [memfd], flags=1 | 8)  # SET_MEM_TABLE, NEED_REPLY
                req, _, body = vu_recv(s)
                assert req == 5 and struct.unpack('<Q', body)[0] == 0, (req, body)
                s.close()  # at once: the EOF may be read before the table is recorded
            finally:
                os.close(memfd)
            ev = ctl.wait_event('vmm_disconnected', timeout=20, device='disk0')
            assert 'renewed' in json.dumps(ev), ev
            v = vmm_status(ctl)
            assert not v['connected'], v
            assert v['last_session']['regions'] == [{'gpa': '0x0', 'size': '0x100000'}], v
            guest.wait_until(lambda: guest.memfd_maps(b.proc.pid) == 0, 20,
                             'the back-end to unmap the VM\'s memory:\n' + b.log_text())
        assert a.proc.poll() is None


def vmm_get_config(s, offset, size):
    """GET_CONFIG of `size` bytes at `offset`: the reply's data."""
    vu_send(s, 24, struct.pack('<III', offset, size, 0) + bytes(size))
    req, _, body = vu_recv(s)
    assert req == 24 and len(body) == 12 + size, (req, body)
    assert struct.unpack('<II', body[:8]) == (offset, size), body
    return body[12:]


def backend_connections(log):
    """The back-end's log cut at each front-end connection: one list of
    lines per connection, in order."""
    out = []
    for line in log.splitlines():
        if 'front-end connected' in line:
            out.append([])
        elif out:
            out[-1].append(line)
    return out


def first_index(lines, *words):
    for i, line in enumerate(lines):
        if all(w in line for w in words):
            return i
    return -1


def vmm_negotiate_config(s):
    """The protocol features a VMM needs for GET_CONFIG (and REPLY_ACK)."""
    vu_send(s, 15)  # GET_PROTOCOL_FEATURES
    req, _, body = vu_recv(s)
    offered, = struct.unpack('<Q', body)
    assert offered & (1 << 9) and offered & (1 << 3), 'CONFIG / REPLY_ACK not offered: %#x' % offered
    vu_send(s, 16, struct.pack('<Q', (1 << 9) | (1 << 3)))  # SET_PROTOCOL_FEATURES: CONFIG, REPLY_ACK
    vu_send(s, 2, struct.pack('<Q', (1 << 32) | (1 << 30)))  # SET_FEATURES: VERSION_1, PROTOCOL_FEATURES


def test_scripted_vmm_requests_follow_the_device_connection(tmp):
    """The port sends the VMM's requests straight to the device's connection
    actor, the one the device last told it of. Across a reconnect: a request
    the VMM sends while the back-end is away is held, and once the device has
    its new connection it goes there, after the device's replay of the
    VMM's set-up (the device's step first, on the same connection). Across a
    renewal (the VMM left): the next VMM's requests go to the renewed
    connection."""
    image = os.path.join(tmp, 'ref.img')
    with open(image, 'wb') as f:
        f.truncate(16 << 20)
    with Backend(ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image,
                 '--close-at', 'SET_VRING_NUM:1') as b, \
            attach(tmp, b.sock, '--reconnect-max-delay', '0.2') as a, Control(a.control) as ctl:
        s = vmm_connect(os.path.join(tmp, 'vmm.sock'))
        memfd = os.memfd_create('vm')
        try:
            os.ftruncate(memfd, 1 << 20)
            vmm_negotiate_config(s)
            first = vmm_get_config(s, 0, 8)  # the first connection answers
            vu_send(s, 5, struct.pack('<II', 1, 0) + struct.pack('<QQQQ', 0, 1 << 20, 0x7f0000000000, 0),
                    [memfd], flags=1 | 8)  # SET_MEM_TABLE, NEED_REPLY
            req, _, body = vu_recv(s)
            assert req == 5 and struct.unpack('<Q', body)[0] == 0, (req, body)
            vu_send(s, 8, struct.pack('<II', 0, 128))  # SET_VRING_NUM: the back-end drops its connection
            # not in the shadow's config cache: held while the back-end is away,
            # then sent to the new connection after the replay
            again = vmm_get_config(s, 8, 8)
            assert len(again) == 8 and len(first) == 8
            ev = ctl.wait_event('vmm_resumed', timeout=30, device='disk0')
            v = vmm_status(ctl)
            assert v['connected'] and v['resumes'] == 1 and v['connections'] == 1, (ev, v)
            # and the next one goes there at once (REPLY_ACK'd by the new connection)
            vu_send(s, 8, struct.pack('<II', 0, 256), flags=1 | 8)  # SET_VRING_NUM, NEED_REPLY
            req, _, body = vu_recv(s)
            assert req == 8 and struct.unpack('<Q', body)[0] == 0, (req, body)
        finally:
            os.close(memfd)
        guest.wait_until(lambda: len(backend_connections(b.log_text())) >= 2 and
                         first_index(backend_connections(b.log_text())[1], '<- SET_VRING_NUM', '256') >= 0,
                         20, 'the second SET_VRING_NUM on the new connection')
        conns = backend_connections(b.log_text())
        assert len(conns) == 2, b.log_text()
        new = conns[1]
        replayed = first_index(new, '<- SET_MEM_TABLE')
        held = first_index(new, '<- GET_CONFIG', 'offset 8')
        after = first_index(new, '<- SET_VRING_NUM', '256')
        # the replay (the device's step) first, then the held request, then the next
        assert 0 <= replayed < held < after, '\n'.join(new)
        assert first_index(conns[0], '<- GET_CONFIG', 'offset 8') < 0, '\n'.join(conns[0])
        # the VMM leaves: the connection is renewed, and the next VMM's
        # requests go to the renewed one
        s.close()
        ev = ctl.wait_event('vmm_disconnected', timeout=20, device='disk0')
        assert 'renewed' in json.dumps(ev), ev
        s = vmm_connect(os.path.join(tmp, 'vmm.sock'))
        try:
            vmm_negotiate_config(s)
            assert len(vmm_get_config(s, 16, 8)) == 8
        finally:
            s.close()
        # (the back-end's log is read by a thread: it may lag the answer; the
        # VMM's leaving renews the connection once more)
        guest.wait_until(lambda: len(backend_connections(b.log_text())) >= 3 and
                         first_index(backend_connections(b.log_text())[2], '<- GET_CONFIG', 'offset 16') >= 0,
                         20, 'the next VMM\'s GET_CONFIG on the renewed connection')
        wait_session_over(ctl, timeout=20)
        assert a.proc.poll() is None


def main():
    global ARGS, PREREQ
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--peers')
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    PREREQ, why = guest.find_prerequisites(ARGS.qemu)
    if PREREQ is None and (not ARGS.k or 'guest' in ARGS.k):
        # the malformed-VMM test needs no guest; the rest cannot run
        print('SKIPPED the guest tests: ' + why)
        if ARGS.k:
            return guest.SKIP
        status = run_tests(globals(), 'malformed', prefix='vufront-vmm-')
        status = run_tests(globals(), 'scripted', prefix='vufront-vmm-') or status
        return status if status != 0 else guest.SKIP
    return run_tests(globals(), ARGS.k, prefix='vufront-vmm-')


if __name__ == '__main__':
    sys.exit(main())
