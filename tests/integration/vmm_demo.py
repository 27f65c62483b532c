#!/usr/bin/env python3
"""The guest demo (`./run.sh guest-demo`): unmodified QEMU -> vufront ->
qemu-storage-daemon, with a real Linux guest (README, "Put vufront between
QEMU and a back-end"; docs/vmm-proxy.md).

It starts qemu-storage-daemon on a fresh 64 MiB image (two queues),
`vufront attach --vmm-socket`, and QEMU 7.2 (TCG, two vCPUs, guest RAM a
shared memfd) whose vhost-user-blk-pci device connects to vufront's VMM
socket. The guest writes a pattern from each vCPU, syncs, drops its caches,
reads it back and powers off. It prints the command lines it ran, the
guest's console lines that matter, vufront's log lines about the VMM socket
and vufront's `status` (VMM connections, each ring's used index); exit 0
when the guest and the image agree, 1 otherwise, 77 when QEMU, the cloud
kernel or busybox-static is missing. Everything it started is stopped by pid.

    vmm_demo.py --vufront build/bin/vufront [--qemu qemu-system-x86_64]
"""
import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import guest
import test_vmm_proxy as vmm
from vubackend import Attach, Control

LIMIT = 90  # seconds the guest may take (about 5-10 s when it works)


def show(title, args):
    """Prints the command line, one option and its value a line."""
    lines = [[]]
    for a in args:
        if a.startswith('-') and lines[-1]:
            lines.append([])
        lines[-1].append(shlex.quote(a))
    print('\n== ' + title)
    print('  ' + ' \\\n      '.join(' '.join(l) for l in lines), flush=True)


class StorageDaemon:
    """qemu-storage-daemon exporting `image` as vhost-user-blk on `sock`
    with 2 queues; our child, stopped by pid (SIGINT, SIGKILL after 3 s)."""

    def __init__(self, sock, image):
        self.sock = sock
        self.args = ['qemu-storage-daemon',
                     '--blockdev', 'driver=file,node-name=disk0,filename=%s' % image,
                     '--export', 'type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,'
                                 'addr.path=%s,writable=on,num-queues=2' % sock]
        self.log = open(sock + '.log', 'w+')
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            guest.wait_until(lambda: os.path.exists(sock) or self.proc.poll() is not None, 10,
                             'qemu-storage-daemon to listen on ' + sock)
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            self.log.seek(0)
            raise AssertionError('qemu-storage-daemon exited: ' + self.log.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait(10)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def print_status(vmm_status):
    session = vmm_status.get('last_session') or vmm_status.get('session') or {}
    print('  vmm.connections: %d (QEMU connected once, as vufront counted)' % vmm_status['connections'])
    print('  vmm.requests_total: %d; last disconnect: %s' %
          (vmm_status['requests_total'], vmm_status.get('last_disconnect', '-')))
    print('  features QEMU acked: %s; protocol features: %s' %
          (session.get('features'), session.get('protocol_features')))
    for q in session.get('queues', []):
        print('  ring %d: size %d, used index %s, base %d' %
              (q['index'], q['size'], q.get('used_index', '-'), q['base']))


def demo(tmp, vufront, prereq):
    qemu, kernel, version, busybox = prereq
    image = os.path.join(tmp, 'disk.img')
    with open(image, 'wb') as f:
        f.truncate(64 << 20)
    qsd_sock = os.path.join(tmp, 'qsd.sock')
    vmm_sock = os.path.join(tmp, 'disk0.vmm.sock')
    ctl_sock = os.path.join(tmp, 'vufront.ctl')
    rd = os.path.join(tmp, 'initrd.cpio')
    modules = guest.build_initramfs(rd, version, busybox, vmm.WANTED_MODULES, vmm.io_body())
    print('== the guest: %s, initramfs with busybox and %s' % (kernel, ', '.join(modules)))

    with StorageDaemon(qsd_sock, image) as qsd:
        show('qemu-storage-daemon (pid %d)' % qsd.proc.pid, qsd.args)
        attach_args = ['--backend', 'disk0=' + qsd_sock, '--queues', '2',
                       '--vmm-socket', 'disk0=' + vmm_sock]
        with Attach(vufront, ctl_sock, *attach_args) as a, Control(ctl_sock) as ctl:
            show('vufront (pid %d)' % a.pid, [vufront, 'attach', '--control', ctl_sock] + attach_args)
            start = time.monotonic()
            q = guest.Qemu(qemu, kernel, rd,
                           ['-chardev', 'socket,id=c0,path=%s,reconnect=1' % vmm_sock,
                            '-device', 'vhost-user-blk-pci,chardev=c0,num-queues=2'], smp=2)
            with q:
                show('QEMU (pid %d)' % q.pid, q.args)
                code = q.wait_exit(LIMIT)
            took = time.monotonic() - start
            print('\n== the guest console (QEMU exit %s after %.1f s)' % (code, took))
            for line in q.console_text().splitlines():
                if 'VUFRONT-GUEST' in line:  # without the firmware's escapes before it
                    print('  ' + line[line.index('VUFRONT-GUEST'):].strip())
            status = vmm.wait_session_over(ctl)
            print('\n== vufront\'s log, the VMM socket')
            for line in a.log_text().splitlines():
                if 'VMM socket' in line:
                    print('  ' + line)
            print('\n== vufront status (device disk0, the VMM session)')
            print_status(status)
    console = q.console_text()
    ok = (code == 0 and 'VUFRONT-GUEST-DONE' in console and 'VUFRONT-GUEST-FAIL' not in console
          and vmm.image_has_pattern(image) and status['connections'] == 1)
    print('\n== %s: the guest read back what it wrote, and %s holds the pattern' %
          ('OK' if ok else 'FAILED', 'the image' if ok else 'checked'))
    if not ok:
        print(vmm.report(q, a))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--qemu', default='qemu-system-x86_64')
    args = ap.parse_args()
    prereq, why = guest.find_prerequisites(args.qemu)
    if prereq is None:
        print('vmm_demo: cannot boot a guest: ' + why)
        return guest.SKIP
    if not shutil.which('qemu-storage-daemon'):
        print('vmm_demo: qemu-storage-daemon not found (Debian package qemu-system-common)')
        return guest.SKIP
    vmm.PREREQ = prereq
    tmp = tempfile.mkdtemp(prefix='vufront-demo-')
    try:
        return demo(tmp, os.path.abspath(args.vufront), prereq)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
