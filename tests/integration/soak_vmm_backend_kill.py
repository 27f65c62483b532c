#!/usr/bin/env python3
"""Soak: a real guest doing I/O through vufront's VMM socket for --minutes
(default 10) while its back-end (vufront-backend, with an in-flight region)
is SIGKILLed every --every seconds (default 30) and restarted at once, as a
service manager would. Not in CI (it takes its time); its result goes in
docs/vmm-proxy.md, "Soak".

Passes when: the guest saw no I/O error and every round's write read back;
QEMU connected once; vufront resumed after every kill; vufront's fd count
and RSS are flat (the last sample within a few fds and 2 MiB of the first
after the first kill).

    soak_vmm_backend_kill.py --vufront build/bin/vufront --backend build/bin/vufront-backend
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

import guest
import test_vmm_proxy as vp
from test_vmm_backend_loss import Supervisor, reference_backend
from vubackend import Control, open_fds


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def guest_loop():
    """Rounds until the host's go: write 64 KiB with O_DIRECT at a
    round-dependent place, read it back, compare; a line per 20 rounds."""
    return guest.wait_for_block('/dev/vda') + '''
i=0; while [ $i -lt 2048 ]; do echo "VUFRONT-PATTERN-line-$i-0123456789abcdef"; i=$((i + 1)); done | head -c 65536 > /pattern
r=0
while true; do
  seek=$((256 + (r %% 64) * 16))
  dd if=/pattern of=/dev/vda bs=4096 seek=$seek oflag=direct 2>/err || echo "VUFRONT-GUEST-FAIL write $r $(cat /err)"
  dd if=/dev/vda of=/back bs=4096 skip=$seek count=16 iflag=direct 2>/dev/null
  cmp -s /pattern /back || echo "VUFRONT-GUEST-FAIL readback $r"
  r=$((r + 1))
  [ $((r %% 20)) -eq 0 ] && echo "VUFRONT-GUEST-ROUND $r"
  [ "$(dd if=/dev/vda bs=512 skip=%d count=1 iflag=direct 2>/dev/null | head -c %d)" = "%s" ] && break
done
dmesg | grep -i "i/o error" && echo "VUFRONT-GUEST-FAIL kernel I/O error"
echo "VUFRONT-GUEST-ROUNDS $r"
echo VUFRONT-GUEST-DONE
poweroff -f
''' % (vp.GO_SECTOR, len(vp.GO_MARK), vp.GO_MARK.decode())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    ap.add_argument('--minutes', type=float, default=10)
    ap.add_argument('--every', type=float, default=30)
    args = ap.parse_args()
    vp.ARGS = argparse.Namespace(vufront=args.vufront, backend=args.backend, peers=None, qemu=args.qemu, k=None)
    vp.PREREQ, why = guest.find_prerequisites(args.qemu)
    if vp.PREREQ is None:
        print('SKIPPED: ' + why)
        return guest.SKIP
    tmp = tempfile.mkdtemp(prefix='vufront-soak-')
    try:
        image = os.path.join(tmp, 'ref.img')
        with open(image, 'wb') as f:
            f.truncate(16 << 20)
        sock, start = reference_backend(tmp, image)
        samples = []
        kills = 0
        with Supervisor(start) as sup, vp.attach(tmp, sock, '--reconnect-max-delay', '0.2') as a, \
                Control(a.control) as ctl:
            with vp.boot(tmp, os.path.join(tmp, 'vmm.sock'), vp.initrd(tmp, guest_loop()), smp=1) as q:
                t0 = time.monotonic()
                end = t0 + args.minutes * 60
                while time.monotonic() < end:
                    time.sleep(min(args.every, max(0, end - time.monotonic())))
                    if time.monotonic() >= end or q.proc.poll() is not None:
                        break
                    before = sup.starts
                    sup.current.proc.send_signal(signal.SIGKILL)
                    kills += 1
                    ctl.wait_event('vmm_resumed', timeout=30, device='disk0')
                    samples.append((round(time.monotonic() - t0), open_fds(a.pid), rss_kib(a.pid)))
                    print('t=%4ds kill %d: resumed (back-end starts %d -> %d), vufront fds %d, RSS %d KiB' %
                          (samples[-1][0], kills, before, sup.starts, samples[-1][1], samples[-1][2]), flush=True)
                with open(image, 'r+b') as f:
                    f.seek(vp.GO_SECTOR * 512)
                    f.write(vp.GO_MARK)
                rep = vp.run_to_end(q, a)
            rounds = [l for l in q.console_text().splitlines() if 'VUFRONT-GUEST-ROUNDS' in l]
            v = vp.wait_session_over(ctl)
            status = ctl.ok('status', device='disk0')
        assert v['connections'] == 1, (v, rep)
        assert v['resumes'] >= kills and v['best_effort_resumes'] == 0, v
        first, last = samples[0], samples[-1]
        assert last[1] - first[1] <= 2, ('fds grew', samples)
        assert last[2] - first[2] <= 2048, ('RSS grew', samples)
        print('PASS: %.1f min, %d kills, %d resumes (all exact), reconnects %d, guest %s; '
              'vufront fds %d -> %d, RSS %d -> %d KiB' %
              (args.minutes, kills, v['resumes'], status['reconnects'], rounds[-1].split()[-1] + ' rounds',
               first[1], last[1], first[2], last[2]))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
