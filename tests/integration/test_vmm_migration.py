#!/usr/bin/env python3
"""QEMU's own live migration through vufront's VMM socket (docs/vmm-proxy.md,
"Live migration"), with a real Linux guest writing all along.

    source:      QEMU 7.2 -> vufront attach (VMM socket) -> qemu-storage-daemon -> disk.img
    destination: QEMU 7.2 -incoming -> a second vufront -> a second qemu-storage-daemon -> disk.img

Both daemons open the same image (QSD_LOCKING=off: shared storage, as QEMU
migrates vhost-user-blk). The guest writes numbered 4 KiB blocks with
O_DIRECT in a loop and keeps a copy of each in its RAM; the test runs QMP
`migrate` at 1 MB/s until the guest wrote 32 blocks with QEMU logging (the
daemon's used-ring writes must be in the log: nothing else dirties those
pages), raises max-bandwidth and waits for `completed`; then it lets the
guest (now on the destination) stop, and the guest reads every block back
from the disk and compares it with its copy (which came over in its RAM).
The source vufront must have forwarded QEMU's SET_LOG_BASE (its session's
`log_bases`), the destination's rings must have started where the source's
stopped. Without LOG_ALL and LOG_SHMFD in vufront's offer QEMU refuses the
`migrate` ("Migration disabled: vhost-user backend lacks
VHOST_USER_PROTOCOL_F_LOG_SHMFD feature.").

A second run loses the source's back-end while QEMU logs: the migration held
back (max-bandwidth 1 MB/s) until the source's qemu-storage-daemon was
SIGKILLed and restarted; vufront marks every page of QEMU's log dirty, its
replay (seen with --trace) sends QEMU's log to the new daemon before the
ring starts, QEMU never notices, and the migration then completes with every
write read back. A third run has vufront-backend on both sides (its disk
the same image, mapped shared) and the source's dying as it takes QEMU's
SET_LOG_BASE (--crash-at): vufront answers QEMU for it once it is gone,
replays the log into the next one, and the migration completes.

Every process is stopped by pid, also when the test fails. Without QEMU, a
cloud kernel or a static busybox it exits 77 (ctest: skipped).

    test_vmm_migration.py --vufront build/bin/vufront --backend build/bin/vufront-backend \
        --peers ../shared/peers [--tap DIR] [-k NAME]

--tap DIR puts ../shared/peers/vu-tap.py between each QEMU and its vufront
and leaves their logs in DIR (source.log, destination.log): QEMU's
migration sequences as docs/vmm-proxy.md shows them.
"""
import argparse
import os
import signal
import subprocess
import sys

import guest
import test_vmm_proxy as vp
from runner import run_tests
from test_vmm_backend_loss import Supervisor
from vubackend import Attach, Backend, Control, Peer

ARGS = None
LIMIT = 60          # seconds for a guest step (about 5-10 s when it works)
BASE_BLOCK = 1024   # the guest writes 4 KiB blocks from here (4 MiB into the disk)
GO_SECTOR = vp.GO_SECTOR
GO_MARK = vp.GO_MARK
MEM_MB = 128


def writer_body():
    """Guest lines: write numbered 4 KiB blocks (O_DIRECT) one after another,
    each also appended to /expect in RAM, saying how far it got every 16;
    every 16 blocks look for the host's go (GO_MARK at GO_SECTOR); then read
    every block back from the disk and compare with /expect."""
    return guest.wait_for_block('/dev/vda') + '''echo VUFRONT-GUEST-WRITING
: > /expect
i=0
while true; do
  printf 'VUFRONT-MIG-BLOCK-%%08d\\n' $i > /one
  dd if=/one of=/blk bs=4096 count=1 conv=sync 2>/dev/null
  dd if=/blk of=/dev/vda bs=4096 seek=$((%(base)d + i)) count=1 oflag=direct 2>/err \\
    || { echo "VUFRONT-GUEST-FAIL write $i $(cat /err)"; break; }
  cat /blk >> /expect
  i=$((i + 1))
  if [ $((i %% 16)) -eq 0 ]; then
    echo "VUFRONT-GUEST-WROTE $i"
    [ "$(dd if=/dev/vda bs=512 skip=%(go)d count=1 iflag=direct 2>/dev/null | head -c %(golen)d)" = "%(mark)s" ] && break
    [ $i -ge 20000 ] && { echo "VUFRONT-GUEST-FAIL no go from the host"; break; }
  fi
done
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/back bs=4096 skip=%(base)d count=$i iflag=direct 2>/dev/null
cmp /expect /back && echo "VUFRONT-GUEST-READBACK $i" || echo "VUFRONT-GUEST-FAIL readback of $i blocks"
dmesg | grep -i "i/o error" && echo "VUFRONT-GUEST-FAIL kernel I/O error"
echo VUFRONT-GUEST-DONE
poweroff -f
''' % {'base': BASE_BLOCK, 'go': GO_SECTOR, 'golen': len(GO_MARK), 'mark': GO_MARK.decode()}


def wrote(q):
    """The last VUFRONT-GUEST-WROTE count on `q`'s console (0: none)."""
    counts = [int(l.split()[-1]) for l in q.console_text().splitlines() if l.startswith('VUFRONT-GUEST-WROTE')]
    return counts[-1] if counts else 0


class Tap:
    """../shared/peers/vu-tap.py on `listen`, forwarding to `target`, its log
    in `log`; stopped by pid."""

    def __init__(self, listen, target, log):
        self.proc = subprocess.Popen([sys.executable, os.path.join(ARGS.peers, 'vu-tap.py'), listen, target,
                                      '--log', log], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        guest.wait_until(lambda: os.path.exists(listen), 10, 'vu-tap on ' + listen)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Side:
    """One side of the migration: a qemu-storage-daemon on the shared image,
    vufront attach in front of it, and (once started) QEMU. stop() ends them
    all by pid, QEMU first."""

    def __init__(self, tmp, name, image, restart=False, reference=None):
        self.tmp = tmp
        self.name = name
        self.attach = self.ctl = self.qemu = self.tap = self.supervisor = None
        self.peers = []
        # reference: vufront-backend on the image (mapped shared, so two
        # of them see one disk), these arguments for its first start only
        qsd_sock = os.path.join(tmp, name + ('-ref.sock' if reference is not None else '-qsd.sock'))

        def start(n):
            if reference is not None:
                p = Backend(ARGS.backend, qsd_sock, '--image', image, *(reference if n == 0 else ()))
            else:
                p = Peer(ARGS.peers, 'start-qsd-blk.sh', qsd_sock, image,
                         env={'QSD_LOCKING': 'off', 'QSD_NUM_QUEUES': '1'})
            self.peers.append(p)
            return p
        try:
            # restart: a new daemon each time one exits, as a service manager would
            if restart:
                self.supervisor = Supervisor(start)
            else:
                start(0)
            self.vmm_sock = os.path.join(tmp, name + '-vmm.sock')
            self.attach = Attach(ARGS.vufront, os.path.join(tmp, name + '-ctl.sock'),
                                 '--backend', 'disk0=' + qsd_sock, '--vmm-socket', 'disk0=' + self.vmm_sock,
                                 '--reconnect-max-delay', '0.2', *(('--trace',) if restart else ()))
            self.ctl = Control(self.attach.control)
            self.qemu_sock = self.vmm_sock
            if ARGS.tap:
                self.qemu_sock = os.path.join(tmp, name + '-tap.sock')
                self.tap = Tap(self.qemu_sock, self.vmm_sock, os.path.join(ARGS.tap, name + '.log'))
        except BaseException:
            self.stop()
            raise

    def boot(self, rd, *extra):
        qemu, kernel, _, _ = vp.PREREQ
        self.qemu = guest.Qemu(qemu, kernel, rd,
                               ['-chardev', 'socket,id=c0,path=%s,reconnect=1' % self.qemu_sock,
                                '-device', 'vhost-user-blk-pci,chardev=c0', *extra],
                               mem_mb=MEM_MB, smp=1, qmp=os.path.join(self.tmp, self.name + '-qmp.sock'))
        return self.qemu

    def vmm(self):
        return self.ctl.ok('status', device='disk0')['vmm']

    def stop(self):
        parts = [self.qemu, self.tap, self.ctl, self.attach]
        if self.supervisor is not None:
            self.supervisor._stop.set()  # no restart while everything stops
            self.supervisor._thread.join(10)
        for part in parts + self.peers:
            if part is None:
                continue
            try:
                part.close() if isinstance(part, Control) else part.stop()
            except Exception as e:  # noqa: BLE001 - stop the rest whatever happens
                sys.stderr.write('stopping %s of %s: %r\n' % (type(part).__name__, self.name, e))

    def report(self):
        if self.qemu is None:
            return '(%s: no QEMU)' % self.name
        return '=== %s\n%s' % (self.name, vp.report(self.qemu, self.attach))


def lose_backend_while_logging(src, kill=True):
    """The source's qemu-storage-daemon SIGKILLed while QEMU logs: vufront
    answers for it, marks every page of QEMU's log dirty once it is gone,
    and replays the log into the restarted daemon before its ring starts."""
    if kill:
        assert src.supervisor.current.signal(signal.SIGKILL)
    ev = src.ctl.wait_event('vmm_resumed', timeout=LIMIT, device='disk0')

    def replayed():  # vufront's stderr is read by a thread: its trace may come after the event
        text = src.attach.log_text()
        at = text.find('VMM socket: the back-end was lost')
        return at >= 0 and 'SET_VRING_KICK' in text[at:]
    guest.wait_until(replayed, 10, 'the replay\'s trace in vufront\'s log')
    log = src.attach.log_text()
    if kill:  # lost with LOG_ALL on: the back-end may have written without logging
        assert 'the VMM logs' in ev['detail'], ev
        assert 'marked dirty once' in log, src.report()
    # the replay (--trace): the daemon got QEMU's log before its ring started
    after = log[log.index('VMM socket: the back-end was lost'):].splitlines()
    sent = [l.split('.sock -> ')[1].split()[0] for l in after if 'source-' in l and '.sock -> ' in l]
    assert 'SET_LOG_BASE' in sent and 'SET_VRING_KICK' in sent, sent
    assert sent.index('SET_LOG_BASE') < sent.index('SET_VRING_KICK'), sent
    guest.wait_until(lambda: src.supervisor.starts >= 2, 10, 'the restarted daemon')  # its script returns last
    assert src.vmm()['session']['logging'], src.vmm()


def migrate(src, uri, lose_backend=False):
    """QMP `migrate`, held at 1 MB/s while the guest writes 32 blocks with
    QEMU logging (the daemon's writes to guest memory are then in the log:
    the used ring's pages, which nothing else dirties); `lose_backend`: the
    daemon lost in that window. Then max-bandwidth raised (TCG is slow) and
    wait until it completes; returns query-migrate's last answer."""
    q = src.qemu
    q.qmp('migrate-set-parameters', {'max-bandwidth': 1 << 20})
    q.qmp('migrate', {'uri': uri})
    guest.wait_until(lambda: (src.vmm().get('session') or {}).get('logging'), LIMIT,
                     'QEMU to start logging\n' + src.report())
    logging_from = wrote(q)
    if lose_backend:
        lose_backend_while_logging(src, kill=lose_backend == 'kill')
    guest.wait_until(lambda: wrote(q) >= logging_from + 32, LIMIT,
                     'the guest to write while QEMU logs\n' + src.report())
    q.qmp('migrate-set-parameters', {'max-bandwidth': 10 << 30})
    info = {}

    def completed():
        info.clear()
        info.update(q.qmp('query-migrate'))
        if info.get('status') in ('failed', 'cancelled'):
            raise AssertionError('migration %s: %s' % (info['status'], info))
        return info.get('status') == 'completed'

    guest.wait_until(completed, LIMIT, 'the migration to complete', interval=0.1)
    return info


# ---- the test -------------------------------------------------------------------

def live_migration(tmp, lose_backend=None):
    if not ARGS.peers:
        raise AssertionError('--peers is needed for qemu-storage-daemon')
    image = os.path.join(tmp, 'disk.img')
    with open(image, 'wb') as f:
        f.truncate(64 << 20)
    rd = vp.initrd(tmp, writer_body())
    uri = 'unix:' + os.path.join(tmp, 'migration.sock')
    sides = []
    try:
        # crash: vufront-backend (in-flight region) that dies taking QEMU's SET_LOG_BASE
        ref = ('--no-packed', '--crash-at', 'SET_LOG_BASE') if lose_backend == 'crash' else None
        src = Side(tmp, 'source', image, restart=bool(lose_backend), reference=ref)
        sides.append(src)
        dst = Side(tmp, 'destination', image, reference=('--no-packed',) if ref else None)
        sides.append(dst)
        src.boot(rd)
        dst.boot(rd, '-incoming', uri)
        rep = lambda: '\n'.join(s.report() for s in sides)  # noqa: E731
        assert src.qemu.wait_console('VUFRONT-GUEST-WROTE', LIMIT), rep()
        info = migrate(src, uri, lose_backend)
        before = wrote(src.qemu)
        # the source stopped its ring (GET_VRING_BASE, answered after the
        # back-end); the destination starts it at that base, without logging
        stopped = [q for q in src.vmm()['session']['queues'] if q['index'] == 0][0]
        assert not stopped['started'], (stopped, rep())

        def dst_ring():
            s = dst.vmm().get('session') or {}
            return ([q for q in s.get('queues', []) if q['index'] == 0] or [None])[0]
        guest.wait_until(lambda: (dst_ring() or {}).get('started'), LIMIT,
                         'the destination to start its ring\n' + rep())
        started = dst_ring()
        assert started['base'] == stopped['base'], (stopped, started)
        assert not dst.vmm()['session']['logging'], dst.vmm()
        # the guest runs on at the destination: let it write a while, then stop
        guest.wait_until(lambda: wrote(dst.qemu) >= before + 32 or dst.qemu.proc.poll() is not None,
                         LIMIT, 'the guest to write on at the destination\n' + rep())
        with open(image, 'r+b') as f:
            f.seek(GO_SECTOR * 512)
            f.write(GO_MARK)
        code = dst.qemu.wait_exit(LIMIT)
        console = dst.qemu.console_text()
        assert code == 0, rep()
        assert 'VUFRONT-GUEST-FAIL' not in console, rep()
        assert 'VUFRONT-GUEST-DONE' in console, rep()
        done = [int(l.split()[-1]) for l in console.splitlines() if l.startswith('VUFRONT-GUEST-READBACK')]
        assert done and done[0] > before, ('fewer blocks read back than written before the switch', before, rep())
        for side in sides:
            assert not [l for l in side.qemu.stderr_text().splitlines() if 'vhost' in l.lower()], rep()
        # the image holds every block (the source's and the destination's)
        with open(image, 'rb') as f:
            f.seek(BASE_BLOCK * 4096)
            for i in range(done[0]):
                block = f.read(4096)
                assert block.startswith(b'VUFRONT-MIG-BLOCK-%08d\n' % i), (i, block[:32])

        # the source forwarded QEMU's dirty log (SET_LOG_BASE, LOG_ALL)
        live = src.vmm()['session']
        assert live['log_bases'] >= 1, live
        assert int(live['features'], 16) & (1 << 26), live
        assert src.vmm()['connections'] == 1  # QEMU never saw a back-end go
        assert src.vmm()['resumes'] == (1 if lose_backend else 0), src.vmm()
        if lose_backend == 'crash':  # QEMU's SET_LOG_BASE was answered for the lost back-end
            assert src.vmm()['answered_for_backend'] >= 1, src.vmm()
        dst_v = vp.wait_session_over(dst.ctl)
        assert dst_v['connections'] == 1 and dst_v['last_session']['log_bases'] == 0, dst_v
        assert info['ram']['total'] >= MEM_MB << 20, info
        print('migrated after %d blocks in %d ms (downtime %s ms, %d RAM bytes sent); %d blocks read back; '
              'source session: log %s, %d SET_LOG_BASE' %
              (before, info.get('total-time', -1), info.get('downtime'), info['ram']['transferred'], done[0],
               live['log'], live['log_bases']), flush=True)
    finally:
        for side in reversed(sides):
            side.stop()


def test_guest_live_migration_through_vufront(tmp):
    live_migration(tmp, lose_backend=False)


def test_guest_live_migration_survives_the_backend_lost_while_qemu_logs(tmp):
    live_migration(tmp, lose_backend='kill')


def test_guest_live_migration_survives_the_backend_crashing_at_set_log_base(tmp):
    live_migration(tmp, lose_backend='crash')


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True, help='vufront-backend')
    ap.add_argument('--peers')
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    ap.add_argument('--tap', help='record each QEMU connection with vu-tap.py into this directory')
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    vp.PREREQ, why = guest.find_prerequisites(ARGS.qemu)
    if vp.PREREQ is None:
        print('SKIPPED: ' + why)
        return guest.SKIP
    return run_tests(globals(), ARGS.k, prefix='vufront-mig-')


if __name__ == '__main__':
    sys.exit(main())
