#!/usr/bin/env python3
"""vufront-bench-vmm-control: what vufront's VMM socket costs QEMU.

QEMU waits for vhost-user replies under its global lock (the guest is frozen
meanwhile), so the control path's cost is the time QEMU spends waiting for
each reply. Measured on QEMU's side, in the same run and in alternating
rounds, for a real Linux guest (TCG) on qemu-storage-daemon:

  direct  QEMU -> qemu-storage-daemon
  vufront QEMU -> vufront attach --vmm-socket -> qemu-storage-daemon

QEMU runs under `strace -f --seccomp-bpf -T -e trace=connect,sendmsg,recvmsg`:
only those calls stop it (its eventfd kicks and calls are read/write and
run untraced, so the data path is not slowed), and -T gives each call's
time in the kernel. A blocking recvmsg on the vhost-user socket is QEMU
waiting for a reply; each is attributed to the request sent before it and
summed per phase:

  connect  before the first SET_MEM_TABLE (QEMU's realize: features, config)
  start    from the first SET_MEM_TABLE (the guest driver's DRIVER_OK)
  stop     from the first GET_VRING_BASE (the guest powers off, QEMU stops
           the device)

The target (issue 26) is start + stop through vufront <= 1.3x direct. As a
sanity check the guest writes and then reads 64 MiB with O_DIRECT (busybox
dd, 1 MiB blocks); its throughput through vufront should be >= 0.95x direct.
Ratios are medians over the rounds with their interquartile range.

    bench_vmm_control.py --vufront build/bin/vufront [--rounds 21] [--quick]

--quick: one round, checks that both configurations were measured (the
ctest smoke run). Exit 77 when QEMU, the cloud kernel, busybox-static,
qemu-storage-daemon or strace is missing.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))

import guest  # noqa: E402
from vubackend import Attach, Control, Peer  # noqa: E402

SET_MEM_TABLE, ADD_MEM_REG, GET_VRING_BASE = 5, 37, 11
NAMES = {1: 'GET_FEATURES', 2: 'SET_FEATURES', 3: 'SET_OWNER', 5: 'SET_MEM_TABLE',
         8: 'SET_VRING_NUM', 9: 'SET_VRING_ADDR', 10: 'SET_VRING_BASE', 11: 'GET_VRING_BASE',
         12: 'SET_VRING_KICK', 13: 'SET_VRING_CALL', 15: 'GET_PROTOCOL_FEATURES',
         16: 'SET_PROTOCOL_FEATURES', 17: 'GET_QUEUE_NUM', 18: 'SET_VRING_ENABLE',
         21: 'SET_BACKEND_REQ_FD', 24: 'GET_CONFIG', 25: 'SET_CONFIG', 31: 'GET_INFLIGHT_FD',
         32: 'SET_INFLIGHT_FD', 36: 'GET_MAX_MEM_SLOTS', 37: 'ADD_MEM_REG', 39: 'SET_STATUS',
         40: 'GET_STATUS'}
IO_MIB = 64
LIMIT = 180  # seconds a guest may take

LINE = re.compile(r'^(\d+)\s+([\d.]+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\((\d+))(.*?)'
                  r'(?:= (-?\d+).*<([\d.]+)>)?$')


def guest_body():
    """Write then read IO_MIB MiB with O_DIRECT; print busybox dd's summary."""
    return '\n'.join([
        guest.wait_for_block('/dev/vda'),
        # the kernel log's timestamps have microseconds (busybox date has no %%N)
        'echo VUFRONT-T-WRITE > /dev/kmsg',
        'dd if=/dev/zero of=/dev/vda bs=1M count=%d oflag=direct 2>/dev/null' % IO_MIB,
        'echo VUFRONT-T-READ > /dev/kmsg',
        'dd if=/dev/vda of=/dev/null bs=1M count=%d iflag=direct 2>/dev/null' % IO_MIB,
        'echo VUFRONT-T-END > /dev/kmsg',
        'dmesg | grep VUFRONT-T- | sed "s/^/VUFRONT-KMSG /"',
        'echo VUFRONT-GUEST-DONE', 'poweroff -f', ''])


def unhex(text):
    """strace -xx's "\\x2f\\x74..." as a str."""
    return bytes(int(h, 16) for h in re.findall(r'\\x([0-9a-f]{2})', text)).decode(errors='replace')


def parse_trace(path, sock_path):
    """Seconds QEMU spent in recvmsg for replies on its connection to
    `sock_path`, per phase (module docstring), and the replies counted.
    Before the first SET_MEM_TABLE a wait is `connect`; after it, the reply
    to GET_VRING_BASE is `stop` and any other `start`. (The guest's firmware
    drives the device too, so a boot has two start/stop cycles.)"""
    pending = {}    # pid -> (call, fd) of an unfinished call
    wanted = None   # QEMU's fd of the connection to sock_path
    last_request = None
    started = False
    waits = {'connect': 0.0, 'start': 0.0, 'stop': 0.0}
    replies = {'connect': 0, 'start': 0, 'stop': 0}
    per_request = {}
    with open(path, errors='replace') as f:
        for raw in f:
            m = LINE.match(raw.rstrip('\n'))
            if not m:
                continue
            pid, _, resumed, call, fd, rest, ret, dur = m.groups()
            if resumed:
                call, fd = pending.pop(pid, (resumed, None))
            elif ret is None:          # "<unfinished ...>"
                pending[pid] = (call, fd)
                continue
            if call == 'connect':
                path_hex = re.search(r'sun_path="([^"]*)"', rest)
                if path_hex and unhex(path_hex.group(1)) == sock_path and ret == '0':
                    wanted = fd
                continue
            if fd is None or fd != wanted or ret is None or int(ret) <= 0:
                continue
            if call == 'sendmsg':
                head = re.search(r'iov_base="((?:\\x[0-9a-f]{2}){4})', rest)
                if head:
                    last_request = struct.unpack('<I', unhex(head.group(1)).encode('latin-1'))[0]
                    started = started or last_request in (SET_MEM_TABLE, ADD_MEM_REG)
            elif call == 'recvmsg' and dur is not None and int(ret) == 12:  # a reply's header
                phase = ('connect' if not started else
                         'stop' if last_request == GET_VRING_BASE else 'start')
                waits[phase] += float(dur)
                replies[phase] += 1
                key = NAMES.get(last_request, str(last_request))
                per_request[key] = per_request.get(key, 0.0) + float(dur)
    return waits, replies, per_request


class TracedQemu(guest.Qemu):
    """guest.Qemu under strace (its wrapper); stopped through QEMU's own pid
    (strace's child), then strace, which ends with it."""

    def qemu_pid(self):
        try:
            with open('/proc/%d/task/%d/children' % (self.proc.pid, self.proc.pid)) as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None

    def stop(self, grace=5):
        pid = self.qemu_pid()
        if pid and self.proc.poll() is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return super().stop(grace)


def run_guest(tmp, prereq, rd, sock, name):
    """Boots a guest on `sock` under strace; returns the measurements."""
    qemu, kernel, _, _ = prereq
    trace = os.path.join(tmp, name + '.strace')
    strace = ['strace', '-f', '--seccomp-bpf', '-ttt', '-T', '-xx', '-s', '8', '-o', trace,
              '-e', 'trace=connect,sendmsg,recvmsg', '--']
    q = TracedQemu(qemu, kernel, rd, ['-chardev', 'socket,id=c0,path=%s' % sock,
                                      '-device', 'vhost-user-blk-pci,chardev=c0,num-queues=1'],
                   wrapper=strace)
    with q:
        code = q.wait_exit(LIMIT)
    console = q.console_text()
    marks = dict((k, float(t)) for t, k in
                 re.findall(r'VUFRONT-KMSG \[\s*([\d.]+)\] VUFRONT-T-(\w+)', console))
    write = (marks.get('WRITE'), marks.get('READ'))
    read = (marks.get('READ'), marks.get('END'))
    if code != 0 or 'VUFRONT-GUEST-DONE' not in console or len(marks) != 3:
        raise AssertionError('%s: the guest failed (exit %s)\n%s\n%s' %
                             (name, code, console[-3000:], q.stderr_text()[-2000:]))
    waits, replies, per_request = parse_trace(trace, sock)
    if not replies['start'] or not replies['stop']:
        raise AssertionError('%s: no reply waits found in %s (start %d, stop %d)' %
                             (name, trace, replies['start'], replies['stop']))
    return {'waits': waits, 'replies': replies, 'per_request': per_request,
            'write_mib_s': IO_MIB / seconds(write), 'read_mib_s': IO_MIB / seconds(read)}


def seconds(span):
    return max(span[1] - span[0], 1e-6)


def one_round(tmp, prereq, rd, peers, vufront, order):
    out = {}
    for config in order:
        img = os.path.join(tmp, 'disk.img')
        with open(img, 'wb') as f:
            f.truncate((IO_MIB + 16) << 20)
        qsd_sock = os.path.join(tmp, 'qsd.sock')
        with Peer(peers, 'start-qsd-blk.sh', qsd_sock, img, env={'QSD_NUM_QUEUES': '1'}) as peer:
            if config == 'direct':
                out[config] = run_guest(tmp, prereq, rd, peer.sock, config)
            else:
                vmm_sock = os.path.join(tmp, 'vmm.sock')
                with Attach(vufront, os.path.join(tmp, 'ctl.sock'), '--backend', 'disk0=' + peer.sock,
                            '--vmm-socket', 'disk0=' + vmm_sock), \
                        Control(os.path.join(tmp, 'ctl.sock')):
                    out[config] = run_guest(tmp, prereq, rd, vmm_sock, config)
        os.unlink(img)
    return out


def quartiles(v):
    if len(v) < 2:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method='inclusive')
    return q[0], statistics.median(v), q[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--peers', default=os.path.join(HERE, '..', '..', 'shared', 'peers'))
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    ap.add_argument('--rounds', type=int, default=21)
    ap.add_argument('--quick', action='store_true', help='one round (the ctest smoke run)')
    args = ap.parse_args()
    prereq, why = guest.find_prerequisites(args.qemu)
    for tool, package in (('qemu-storage-daemon', 'qemu-system-common'), ('strace', 'strace')):
        if prereq is not None and not shutil.which(tool):
            prereq, why = None, '%s not found (Debian package %s)' % (tool, package)
    if prereq is None:
        print('bench_vmm_control: cannot run: ' + why)
        return guest.SKIP
    rounds = 1 if args.quick else args.rounds
    tmp = tempfile.mkdtemp(prefix='vufront-bench-vmm-')
    results = []
    try:
        rd = os.path.join(tmp, 'initrd.cpio')
        guest.build_initramfs(rd, prereq[2], prereq[3], ['virtio_pci', 'virtio_blk'], guest_body())
        for i in range(rounds):  # alternating which configuration goes first
            order = ('direct', 'vufront') if i % 2 == 0 else ('vufront', 'direct')
            r = one_round(tmp, prereq, rd, os.path.abspath(args.peers), os.path.abspath(args.vufront), order)
            results.append(r)
            d, v = r['direct'], r['vufront']
            print('round %2d: start+stop waits direct %.2f ms, vufront %.2f ms; write %.1f/%.1f MiB/s'
                  % (i + 1, 1e3 * (d['waits']['start'] + d['waits']['stop']),
                     1e3 * (v['waits']['start'] + v['waits']['stop']), d['write_mib_s'], v['write_mib_s']),
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    return 0


def report(results):
    print('\nQEMU waiting for vhost-user replies (sum of recvmsg times per phase), '
          'medians over %d rounds, ratio vufront/direct [IQR]' % len(results))
    print('%-12s %10s %10s %8s %18s' % ('phase', 'direct ms', 'vufront ms', 'replies', 'ratio [q1, q3]'))
    rows = [('connect', lambda w: w['connect']), ('start', lambda w: w['start']),
            ('stop', lambda w: w['stop']), ('start+stop', lambda w: w['start'] + w['stop'])]
    for name, get in rows:
        d = [get(r['direct']['waits']) for r in results]
        v = [get(r['vufront']['waits']) for r in results]
        ratio = [b / a if a > 0 else float('inf') for a, b in zip(d, v)]
        n = (results[0]['vufront']['replies'].get(name)
             if name in results[0]['vufront']['replies'] else
             results[0]['vufront']['replies']['start'] + results[0]['vufront']['replies']['stop'])
        q1, med, q3 = quartiles(ratio)
        print('%-12s %10.2f %10.2f %8d %8.2fx [%.2f, %.2f]' %
              (name, 1e3 * statistics.median(d), 1e3 * statistics.median(v), n, med, q1, q3))
    for what in ('write_mib_s', 'read_mib_s'):
        d = [r['direct'][what] for r in results]
        v = [r['vufront'][what] for r in results]
        q1, med, q3 = quartiles([b / a for a, b in zip(d, v)])
        print('guest %-5s %d MiB O_DIRECT: direct %.1f MiB/s, vufront %.1f MiB/s, ratio %.2fx [%.2f, %.2f]'
              % (what.split('_')[0], IO_MIB, statistics.median(d), statistics.median(v), med, q1, q3))
    last = results[-1]['vufront']['per_request']
    print('\nvufront, last round, wait per request kind (ms): ' +
          ', '.join('%s %.2f' % (k, 1e3 * t) for k, t in sorted(last.items(), key=lambda kv: -kv[1])))


if __name__ == '__main__':
    sys.exit(main())
