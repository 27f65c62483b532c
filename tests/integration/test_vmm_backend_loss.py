#!/usr/bin/env python3
"""A back-end lost, or snapshotted, under a running guest (`vufront attach
--vmm-socket`, docs/vmm-proxy.md, "Back-end loss" and "Snapshot under a
running VMM"): QEMU 7.2 never sees it.

* vufront-backend (in-flight region) dies (its --crash-in-request, with
  --crash-outstanding 8) taking a request while the guest has at least 8
  writes outstanding on the ring (4 writers of 8 MiB O_DIRECT writes, each
  split into 13+ requests); a new one is started:
  no I/O error in the guest, every write reads back, QEMU connected once,
  the resume is exact;
* qemu-storage-daemon (no in-flight region) SIGKILLed and restarted while
  the guest writes in a loop: the vmm_resumed event says best effort, and
  the data the guest wrote reads back;
* a back-end that hangs at GET_VRING_BASE while the guest reboots: QEMU is
  answered within --drain-timeout, the back-end is fenced (SIGKILL), a new
  one is started, and the guest boots again and works;
* a back-end that drops its connection when the kernel starts the ring:
  reconnected (the same process: not fenced), and the guest's I/O works;
* --fence none with a hung back-end that stays up: the VMM connection
  closes instead of vufront answering for it;
* --resume-without-inflight=no closes the VMM connection instead;
* virtiofsd killed: virtio-fs cannot be resumed, so the VMM connection
  closes, saying so;
* a snapshot through the control socket while the guest writes: the guest
  pauses and goes on; the snapshot restored into a fresh vufront-backend
  holds what the guest wrote before it.

Each back-end is restarted by the test's `Supervisor` when it exits, as a
service manager would.

    test_vmm_backend_loss.py --vufront build/bin/vufront --backend build/bin/vufront-backend \\
        --peers ../shared/peers [-k NAME]
"""
import argparse
import os
import signal
import subprocess
import sys
import threading

import guest
import test_vmm_proxy as vp
from runner import run_tests
from vubackend import Backend, Control

LIMIT = vp.GUEST_LIMIT


BIG = 8 << 20  # each writer's O_DIRECT write: the block layer splits it into 13+ requests at once


def parallel_writes(writers=4, rounds=4, then='poweroff -f'):
    """Guest lines: `writers` background dd processes, each writing 8 MiB of
    pattern in one O_DIRECT write (split into 13 or more requests that reach
    the ring together) at its own place, `rounds` times; then every range is
    read back and compared."""
    lines = [guest.wait_for_block('/dev/vda'),
             'i=0; while [ $i -lt 2048 ]; do echo "VUFRONT-PATTERN-line-$i-0123456789abcdef"; '
             'i=$((i + 1)); done | head -c 65536 > /pattern',
             'i=0; while [ $i -lt 128 ]; do cat /pattern; i=$((i + 1)); done > /big',
             'echo VUFRONT-GUEST-WRITING',
             'r=0; while [ $r -lt %d ]; do' % rounds]
    for w in range(writers):
        lines.append('  dd if=/big of=/dev/vda bs=8M seek=%d oflag=direct 2>/err%d '
                     '|| echo "VUFRONT-GUEST-FAIL write %d $(cat /err%d)" &' % (w + 1, w, w, w))
    lines += ['  wait', '  r=$((r + 1))', 'done', 'echo 3 > /proc/sys/vm/drop_caches']
    for w in range(writers):
        lines.append('dd if=/dev/vda of=/back bs=8M skip=%d count=1 iflag=direct 2>/dev/null; '
                     'cmp /big /back || echo "VUFRONT-GUEST-FAIL readback %d"' % (w + 1, w))
    lines += ['rm -f /back',
              'dmesg | grep -i "i/o error" && echo "VUFRONT-GUEST-FAIL kernel I/O error"',
              'echo VUFRONT-GUEST-DONE', then, '']
    return '\n'.join(lines)


def image_has_writes(image, writers=4):
    want = vp.pattern() * 128
    with open(image, 'rb') as f:
        for w in range(writers):
            f.seek((w + 1) * BIG)
            if f.read(BIG) != want:
                return False
    return True


def new_image(path, size=64 << 20):
    with open(path, 'wb') as f:
        f.truncate(size)
    return path


class Supervisor:
    """Restarts a back-end each time it exits (`start()` makes the next), as
    systemd's Restart=always would; stops the last one at the end."""

    def __init__(self, start):
        self._start = start
        self.current = start(0)
        self.all = [self.current]
        self.starts = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            r = self.current.wait_exit(0.05)  # Backend: status or None; Peer: bool
            if r is None or r is False:
                continue
            if self._stop.is_set():
                return
            try:
                self.current = self._start(self.starts)
                self.all.append(self.current)
                self.starts += 1
            except AssertionError:
                return

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.current.stop()


def reference_backend(tmp, image, first_args=()):
    sock = os.path.join(tmp, 'ref.sock')

    def start(n):
        return Backend(vp.ARGS.backend, sock, '--image', image, *(first_args if n == 0 else ()))
    return sock, start


def attach(tmp, sock, *extra):
    return vp.attach(tmp, sock, '--reconnect-max-delay', '0.2', *extra)


def run(q, a):
    return vp.run_to_end(q, a)


# ---- the tests ------------------------------------------------------------------

def crash_with_writes_in_flight(tmp, packed):
    image = new_image(os.path.join(tmp, 'ref.img'))
    # The first back-end dies taking a request, from its 40th on (the boot
    # reads some), while the driver has at least 8 outstanding on the ring
    # (split; a packed ring's outstanding requests are not countable from
    # the device side: there it dies at its 60th, amid the writes).
    crash = ('--crash-in-request', '60') if packed else ('--crash-in-request', '40', '--crash-outstanding', '8')
    sock, start = reference_backend(tmp, image, crash)
    with Supervisor(start) as sup, attach(tmp, sock) as a, Control(a.control) as ctl:
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, parallel_writes()),
                     ',packed=on' if packed else '', smp=1) as q:
            rep = run(q, a)
        assert sup.starts >= 2, ('the back-end never crashed', rep)
        crash = [l for l in sup.all[0].log if '--crash-in-request' in l]
        assert crash, ''.join(sup.all[0].log)
        outstanding = int(crash[0].split('ring ')[1].split(': ')[1].split()[0])
        assert packed or outstanding >= 8, ('fewer than 8 writes in flight when it died', crash[0])
        assert 'resubmitting' in ''.join(sup.all[1].log), ''.join(sup.all[1].log)
        assert image_has_writes(image), rep
        ev = ctl.wait_event('vmm_resumed', timeout=5, device='disk0')
        assert ev['resume'] == 'exact', ev
        v = vp.wait_session_over(ctl)
        assert v['connections'] == 1, (v, rep)  # QEMU connected once
        assert v['resumes'] >= 1 and v['best_effort_resumes'] == 0, v
        assert ctl.ok('status', device='disk0')['reconnects'] >= 1
        if packed:
            assert int(v['last_session']['features'], 16) & (1 << 34), v  # QEMU set RING_PACKED


def test_guest_backend_crash_with_writes_in_flight_is_invisible(tmp):
    crash_with_writes_in_flight(tmp, packed=False)


def test_guest_backend_crash_packed_rings_resume_from_the_inflight_region(tmp):
    crash_with_writes_in_flight(tmp, packed=True)


def test_guest_qsd_killed_and_restarted_resumes_best_effort(tmp):
    if not vp.ARGS.peers:
        raise AssertionError('--peers is needed for qemu-storage-daemon')
    img = os.path.join(tmp, 'disk.img')
    with open(img, 'wb') as f:
        f.truncate(64 << 20)
    sock = os.path.join(tmp, 'qsd.sock')
    peers = []

    def start(n):
        p = vp.Peer(vp.ARGS.peers, 'start-qsd-blk.sh', sock, img, env={'QSD_NUM_QUEUES': '1'})
        peers.append(p)
        return p

    with Supervisor(start) as sup, attach(tmp, sock) as a, Control(a.control) as ctl:
        body = parallel_writes(rounds=8)
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, body), smp=1) as q:
            assert q.wait_console('VUFRONT-GUEST-WRITING', LIMIT), vp.report(q, a)
            sup.current.signal(signal.SIGKILL)
            ev = ctl.wait_event('vmm_resumed', timeout=30, device='disk0')
            assert ev['resume'] == 'best_effort', ev
            rep = run(q, a)
        assert image_has_writes(img), rep
        v = vp.wait_session_over(ctl)
        assert v['connections'] == 1 and v['best_effort_resumes'] == 1, (v, rep)
    for p in peers:
        p.stop()


def hung_at_get_vring_base(tmp, packed):
    image = new_image(os.path.join(tmp, 'ref.img'), 16 << 20)
    # The first back-end never answers its first GET_VRING_BASE (the guest's
    # reboot stops the ring): vufront answers QEMU from the used index once
    # it has SIGKILLed it; the next back-end serves the second boot.
    sock, start = reference_backend(tmp, image, ('--delay-reply', 'GET_VRING_BASE:600000'))
    body = vp.reboot_body()
    with Supervisor(start) as sup, attach(tmp, sock, '--drain-timeout', '2') as a, \
            Control(a.control) as ctl:
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, body),
                     ',packed=on' if packed else '', smp=1, reboot=True) as q:
            assert q.wait_console('VUFRONT-GUEST-SECOND-BOOT', LIMIT), vp.report(q, a)
            rep = run(q, a)
        assert vp.image_has_pattern(image, cpus=1), rep
        assert sup.starts >= 2, rep
        ev = ctl.wait_event('fenced', timeout=5, device='disk0')
        assert 'killed (SIGKILL)' in ev['detail'], ev
        assert ctl.ok('status', device='disk0')['fenced'] == 1
        assert vp.wait_session_over(ctl)['connections'] == 1, rep


def test_guest_backend_hung_at_get_vring_base_is_fenced_on_reboot(tmp):
    hung_at_get_vring_base(tmp, packed=False)


def test_guest_backend_hung_packed_ring_answered_from_the_inflight_region(tmp):
    # a packed ring has no used index in guest memory: the answer comes
    # from the in-flight region the hung back-end kept
    hung_at_get_vring_base(tmp, packed=True)


def test_guest_fence_none_closes_the_vmm_connection_instead(tmp):
    image = new_image(os.path.join(tmp, 'ref.img'), 16 << 20)
    # a back-end that hangs at GET_VRING_BASE (the guest's reboot) and stays
    # up: with --fence none vufront may not answer for it
    body = guest.wait_for_block('/dev/vda') + 'echo VUFRONT-GUEST-REBOOTING\nreboot -f\n'
    with Backend(vp.ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image,
                 '--delay-reply', 'GET_VRING_BASE:600000') as b, \
            attach(tmp, b.sock, '--fence', 'none', '--drain-timeout', '2') as a, Control(a.control) as ctl:
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, body), smp=1, reboot=True) as q:
            # (QEMU, frozen in GET_VRING_BASE, may not get the guest's last
            # console line out: the event is what tells)
            ev = ctl.wait_event('vmm_disconnected', timeout=LIMIT, device='disk0')
            assert 'could not be fenced' in ev['detail'] and '--fence none' in ev['detail'], (ev, vp.report(q, a))
            q.kill()
        assert b.proc.poll() is None, 'vufront signalled the back-end although --fence none'
        assert ctl.ok('status', device='disk0')['fenced'] == 0


def test_guest_backend_drops_its_connection_at_ring_start(tmp):
    image = new_image(os.path.join(tmp, 'ref.img'), 16 << 20)
    with Backend(vp.ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image,
                 '--close-at', 'SET_VRING_KICK:1') as b, attach(tmp, b.sock) as a, Control(a.control) as ctl:
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, vp.io_body(cpus=1)), smp=1) as q:
            rep = run(q, a)
        assert vp.image_has_pattern(image, cpus=1), rep
        assert b.proc.poll() is None, 'the back-end that came back itself was fenced'
        v = vp.wait_session_over(ctl)
        assert v['connections'] == 1 and v['resumes'] >= 1, (v, rep)
        assert ctl.ok('status', device='disk0')['fenced'] == 0


def test_guest_no_best_effort_closes_the_vmm_connection(tmp):
    if not vp.ARGS.peers:
        raise AssertionError('--peers is needed for qemu-storage-daemon')
    peer, img = vp.qsd(tmp, queues=1)
    with peer, attach(tmp, peer.sock, '--resume-without-inflight', 'no') as a, Control(a.control) as ctl:
        body = parallel_writes(rounds=1000, then='')
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, body), smp=1) as q:
            assert q.wait_console('VUFRONT-GUEST-WRITING', LIMIT), vp.report(q, a)
            peer.signal(signal.SIGKILL)
            ev = ctl.wait_event('vmm_disconnected', timeout=20, device='disk0')
            assert '--resume-without-inflight=no' in ev['detail'], ev
            q.kill()


def test_guest_snapshot_while_the_guest_writes(tmp):
    image = new_image(os.path.join(tmp, 'ref.img'))
    # The guest writes its pattern, then keeps writing elsewhere until the
    # host's go (which comes after the snapshot), then reads all back.
    body = parallel_writes(then='') + '''echo VUFRONT-GUEST-WRITTEN
while true; do
  dd if=/pattern of=/dev/vda bs=4096 seek=12288 oflag=direct 2>/dev/null || echo "VUFRONT-GUEST-FAIL loop"
  [ "$(dd if=/dev/vda bs=512 skip=%d count=1 iflag=direct 2>/dev/null | head -c %d)" = "%s" ] && break
done
dd if=/dev/vda of=/back bs=4096 skip=12288 count=16 iflag=direct 2>/dev/null
cmp /pattern /back || echo "VUFRONT-GUEST-FAIL loop readback"
echo VUFRONT-GUEST-DONE
poweroff -f
''' % (vp.GO_SECTOR, len(vp.GO_MARK), vp.GO_MARK.decode())
    snap = os.path.join(tmp, 'running.vfsnap')
    with Backend(vp.ARGS.backend, os.path.join(tmp, 'ref.sock'), '--image', image) as b, \
            attach(tmp, b.sock) as a, Control(a.control) as ctl:
        with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, body), smp=1) as q:
            assert q.wait_console('VUFRONT-GUEST-WRITTEN', LIMIT), vp.report(q, a)
            info = ctl.ok('snapshot', {'path': snap}, device='disk0')
            assert info['state_bytes'] > 0, info
            v = vp.vmm_status(ctl)
            assert v['connected'] and v['snapshots'] == 1, v
            assert 'ring(s) restarted' in v['last_snapshot_pause'], v
            with open(image, 'r+b') as f:  # the go, after the snapshot
                f.seek(vp.GO_SECTOR * 512)
                f.write(vp.GO_MARK)
            rep = run(q, a)
        assert vp.wait_session_over(ctl)['connections'] == 1, rep
    # offline: the snapshot restored into a fresh back-end holds the writes
    fresh = new_image(os.path.join(tmp, 'fresh.img'))
    with Backend(vp.ARGS.backend, os.path.join(tmp, 'fresh.sock'), '--image', fresh) as b2:
        out = subprocess.run([vp.ARGS.vufront, 'restore', b2.sock, '--in', snap],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
    assert image_has_writes(fresh), 'the restored image lacks what the guest wrote before the snapshot'


def test_guest_virtiofs_backend_lost_fails_visibly(tmp):
    if not vp.ARGS.peers:
        raise AssertionError('--peers is needed for virtiofsd')
    shared = os.path.join(tmp, 'shared')
    os.mkdir(shared)
    with open(os.path.join(shared, 'hello.txt'), 'w') as f:
        f.write(vp.FS_HELLO + '\n')
    fs_sock = os.path.join(tmp, 'virtiofsd.sock')
    vmm_sock = os.path.join(tmp, 'vmm.sock')
    body = vp.fs_body().replace('echo VUFRONT-GUEST-DONE\npoweroff -f\n',
                                'echo VUFRONT-GUEST-DONE\nwhile true; do sleep 1; done\n')
    with vp.Peer(vp.ARGS.peers, 'start-virtiofsd.sh', fs_sock, shared) as fsd:
        a = vp.Attach(vp.ARGS.vufront, os.path.join(tmp, 'ctl.sock'), '--backend', 'fs0=' + fs_sock,
                      '--device', 'fs0=fs', '--vmm-socket', 'fs0=' + vmm_sock)
        with a, Control(a.control) as ctl:
            with vp.boot(tmp, vmm_sock, vp.initrd(tmp, body, modules=vp.FS_MODULES), ',tag=' + vp.FS_TAG,
                         smp=1, device='vhost-user-fs-pci', reconnect=False) as q:
                assert q.wait_console('VUFRONT-GUEST-DONE', LIMIT), vp.report(q, a)
                fsd.signal(signal.SIGKILL)
                # the FUSE session died with virtiofsd: vufront does not
                # pretend, it closes the VMM connection and says why
                ev = ctl.wait_event('vmm_disconnected', timeout=20, device='fs0')
                assert 'virtio-fs cannot be resumed' in ev['detail'], ev
                q.kill()
            assert a.proc.poll() is None, 'vufront attach died with its back-end'


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--peers')
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    ap.add_argument('-k', help='run only tests whose name contains this (or one of A,B,...)')
    vp.ARGS = ap.parse_args()
    vp.PREREQ, why = guest.find_prerequisites(vp.ARGS.qemu)
    if vp.PREREQ is None:
        print('SKIPPED the guest tests: ' + why)
        return guest.SKIP
    wanted = (vp.ARGS.k or '').split(',')
    tests = {n: f for n, f in globals().items() if not n.startswith('test_') or any(w in n for w in wanted)}
    return run_tests(tests, None, prefix='vufront-loss-')


if __name__ == '__main__':
    sys.exit(main())
