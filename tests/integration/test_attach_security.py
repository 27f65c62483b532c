#!/usr/bin/env python3
"""`vufront attach` run by root for a VMM of another uid (nobody, 65534),
docs/attach-protocol.md "Who may connect" and "Snapshot files":

* the control socket's mode and group: 0600 keeps other uids out at connect
  (EACCES), --allow-uid widens it to 0666 and the peer-uid check stays the
  gate, --control-mode / --control-group set it exactly; --listen-mode /
  --listen-group do the same for client-mode back-end sockets;
* snapshot and restore files: another uid cannot make vufront open a path
  outside --snapshot-dir ("..", absolute paths, symbolic links), nor any
  path without one; a file the VMM opened and passed as an fd works both
  ways (the example VMM as nobody), wrong fds are refused;
* a snapshot file changed while it is being restored fails the restore and
  the back-end is reset.

    test_attach_security.py --vufront build/bin/vufront --vmm build/bin/vufront-example-vmm
                            --backend build/bin/vufront-backend [-k NAME]
"""
import argparse
import json
import os
import stat
import subprocess
import sys

from runner import run_tests
from vubackend import Attach, Backends, Control, run

ARGS = None
NOBODY = 65534
# A python any uid can run (the test's own may live under /root).
PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'other_uid_client.py')


def demote():
    """In the child before exec: uid and gid nobody, no supplementary groups
    (root's group 0 would otherwise still open group-readable files)."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def as_nobody(control, steps):
    """other_uid_client.py as uid 65534: its output lines, parsed."""
    r = subprocess.run([PYTHON, CLIENT, control, json.dumps(steps)], capture_output=True, text=True,
                       timeout=120, preexec_fn=demote)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def vmm_as_nobody(control, *args):
    return subprocess.run([ARGS.vmm, '--control', control, *args], capture_output=True, text=True,
                          timeout=120, preexec_fn=demote)


def ctl_path(tmp):
    return os.path.join(tmp, 'vufront.ctl')


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def refused(reply, code='permission_denied'):
    assert reply.get('ok') is False and reply['error']['code'] == code, reply
    return reply['error']['message']


# ---- who may connect ---------------------------------------------------------------------

def test_allow_uid_opens_the_socket_and_the_uid_check_stays_the_gate(tmp):
    os.chmod(tmp, 0o755)
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        # default: 0600, another uid is stopped by the file system at connect
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock) as att:
            assert mode_of(att.control) == 0o600
            assert as_nobody(att.control, []) == [{'connect_error': 'EACCES'}]
        # --allow-uid: 0666, so the allowed uid can connect, and it works
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', str(NOBODY)) as att:
            assert mode_of(att.control) == 0o666
            att.wait_log('control socket mode 0666; uids allowed: 0, 65534')
            out = as_nobody(att.control, [{'cmd': 'status'}])
            assert out[0]['event'] == 'hello', out
            assert out[1]['ok'] is True and out[1]['result']['state'] == 'negotiated', out
        # by name: the user "nobody" (getpwnam) is uid 65534; an unknown name is a usage error
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', 'nobody') as att:
            att.wait_log('control socket mode 0666; uids allowed: 0, %d' % NOBODY)
            out = as_nobody(att.control, [{'cmd': 'status'}])
            assert out[1]['ok'] is True, out
        r = run(ARGS.vufront, 'attach', '--control', ctl_path(tmp), '--backend', a.sock,
                '--allow-uid', 'no-such-user-here', timeout=30)
        assert r.returncode == 2 and '--allow-uid: no user named no-such-user-here' in r.stderr, r.stderr
        # a group gets 0660 and through the file system, but without --allow-uid
        # the uid check refuses it
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--control-group', str(NOBODY)) as att:
            st = os.lstat(att.control)
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == NOBODY, (oct(st.st_mode), st.st_gid)
            out = as_nobody(att.control, [])
            assert out[0]['event'] == 'refused', out
            assert 'uid 65534' in out[0]['error']['message'], out
            att.wait_log('refused a connection from uid 65534')
        # an explicit mode wins over --allow-uid's widening
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', str(NOBODY),
                    '--control-mode', '0600') as att:
            assert mode_of(att.control) == 0o600
            assert as_nobody(att.control, []) == [{'connect_error': 'EACCES'}]
        for bad in (['--control-mode', '0999'], ['--control-mode', '1x'], ['--control-group', 'no-such-group-x'],
                    ['--listen-mode', '77777']):
            r = run(ARGS.vufront, 'attach', '--control', ctl_path(tmp), '--backend', a.sock, *bad, timeout=30)
            assert r.returncode == 2 and bad[0] in r.stderr, (bad, r.returncode, r.stderr)


def test_client_mode_sockets_take_listen_mode_and_group(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        sock = os.path.join(tmp, 'a.sock')
        bs.start('a', '--size', '4M', '--connect', ready='connecting to')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', sock, '--client-mode',
                    '--listen-group', str(NOBODY)) as att, Control(att.control) as c:
            st = os.lstat(sock)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == NOBODY, (oct(st.st_mode), st.st_gid)
            assert mode_of(att.control) == 0o600  # the control socket keeps its own default
            assert c.ok('status')['state'] == 'negotiated'


# ---- snapshot files ------------------------------------------------------------------------

def root_only_victim(tmp):
    """A file in a 0700 root directory: what another uid must not reach."""
    secret = os.path.join(tmp, 'root-only')
    os.mkdir(secret, 0o700)
    victim = os.path.join(secret, 'victim')
    with open(victim, 'wb') as f:
        f.write(b'precious')
    return secret, victim


def assert_untouched(secret, victim):
    with open(victim, 'rb') as f:
        assert f.read() == b'precious'
    assert os.listdir(secret) == ['victim'], os.listdir(secret)


def test_another_uid_names_no_path_without_snapshot_dir(tmp):
    os.chmod(tmp, 0o755)
    secret, victim = root_only_victim(tmp)
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', str(NOBODY)) as att:
            out = as_nobody(att.control, [{'cmd': 'snapshot', 'args': {'path': victim}},
                                          {'cmd': 'restore', 'args': {'path': victim}}])
            for reply in out[1:]:
                assert 'pass the file as an fd' in refused(reply), reply
            assert_untouched(secret, victim)
            # the example VMM as nobody opens the file with its own rights: it cannot
            r = vmm_as_nobody(att.control, '--snapshot', victim)
            assert r.returncode == 1 and 'FAIL snapshot' in r.stdout and 'Permission denied' in r.stdout, r.stdout
            r = vmm_as_nobody(att.control, '--snapshot', victim, '--by-path')
            assert r.returncode == 1 and 'permission_denied' in r.stdout, r.stdout
            assert_untouched(secret, victim)
            # vufront's own uid keeps naming paths (compatibility)
            with Control(att.control) as c:
                c.ok('reset')
                own = os.path.join(tmp, 'own.vfsnap')
                assert c.ok('snapshot', {'path': own})['path'] == own
                assert os.path.exists(own)


def test_snapshot_dir_confines_another_uids_paths(tmp):
    os.chmod(tmp, 0o755)
    secret, victim = root_only_victim(tmp)
    snaps = os.path.join(tmp, 'snaps')
    os.mkdir(snaps, 0o755)
    os.mkdir(os.path.join(snaps, 'sub'))
    os.symlink(secret, os.path.join(snaps, 'link'))           # a directory link pointing out
    os.symlink(victim, os.path.join(snaps, 'leaf'))           # a file link pointing out
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', str(NOBODY),
                    '--snapshot-dir', snaps) as att:
            outside = ['../root-only/victim', victim, 'link/victim', 'leaf', 'sub/../../root-only/victim',
                       snaps + '/../root-only/victim', snaps + 'x/victim']
            steps = [{'cmd': 'snapshot', 'args': {'path': p}} for p in outside]
            steps += [{'cmd': 'restore', 'args': {'path': p}} for p in outside]
            out = as_nobody(att.control, steps)
            assert len(out) == 1 + len(steps), out
            for path, reply in zip(outside + outside, out[1:]):
                assert 'snapshot-dir' in refused(reply), (path, reply)
            assert_untouched(secret, victim)
            assert sorted(os.listdir(snaps)) == ['leaf', 'link', 'sub'], os.listdir(snaps)
            # inside: relative, absolute under it, a subdirectory; then a restore from it
            out = as_nobody(att.control, [
                {'cmd': 'snapshot', 'args': {'path': 'vm1.vfsnap'}},
                {'cmd': 'snapshot', 'args': {'path': snaps + '/vm2.vfsnap'}},
                {'cmd': 'snapshot', 'args': {'path': 'sub/vm3.vfsnap'}},
                {'cmd': 'restore', 'args': {'path': 'sub/vm3.vfsnap'}}])
            for reply in out[1:]:
                assert reply['ok'] is True, reply
            assert out[1]['result']['path'] == 'vm1.vfsnap', out[1]
            for name in ('vm1.vfsnap', 'vm2.vfsnap', 'sub/vm3.vfsnap'):
                assert mode_of(os.path.join(snaps, name)) == 0o600, name
            assert not [f for f in os.listdir(snaps) if '.tmp.' in f]
            att.wait_log('snapshot files: fds, and paths under ' + os.path.realpath(snaps))


def test_fd_snapshot_and_restore_round_trip_as_another_uid(tmp):
    os.chmod(tmp, 0o755)
    mine = os.path.join(tmp, 'nobody')
    os.mkdir(mine, 0o700)
    os.chown(mine, NOBODY, NOBODY)
    with Backends(ARGS.backend, tmp) as bs:
        a = bs.start('a', '--size', '4M')
        b = bs.start('b', '--size', '4M')
        with Attach(ARGS.vufront, ctl_path(tmp), '--backend', a.sock, '--allow-uid', str(NOBODY)) as att:
            snap = os.path.join(mine, 'disk.vfsnap')
            # the example VMM's whole flow as nobody: snapshot into an fd it
            # opened, restore from an fd, the data read back (into the same and
            # into a new back-end)
            for extra in ([], ['--restore-into', b.sock]):
                r = vmm_as_nobody(att.control, '--snapshot', snap, *extra)
                assert r.returncode == 0 and 'result: ok, the data matched' in r.stdout, r.stdout + r.stderr
                assert '(fd)' in r.stdout and 'ok   restore' in r.stdout, r.stdout
                st = os.stat(snap)
                assert st.st_uid == NOBODY and st.st_size > 4096, (st.st_uid, st.st_size)
                assert os.listdir(mine) == ['disk.vfsnap'], os.listdir(mine)
            # wrong fds: append-only or read-only for a snapshot, write-only for
            # a restore; both an fd and a path; neither
            out = as_nobody(att.control, [
                {'open': [os.path.join(mine, 'x'), 'w'], 'cmd': 'snapshot', 'args': {'fd': 0, 'path': 'y'}},
                {'open': [snap, 'a'], 'cmd': 'snapshot', 'args': {'fd': 0}},
                {'open': [snap, 'r'], 'cmd': 'snapshot', 'args': {'fd': 0}},
                {'open': [os.path.join(mine, 'z'), 'w'], 'cmd': 'restore', 'args': {'fd': 0}},
                {'cmd': 'restore', 'args': {}}])
            assert 'one of them' in refused(out[1], 'bad_message'), out[1]
            assert 'without O_APPEND' in refused(out[2], 'bad_fds'), out[2]
            assert 'open for writing' in refused(out[3], 'bad_fds'), out[3]
            assert 'open for reading' in refused(out[4], 'bad_fds'), out[4]
            refused(out[5], 'bad_message')


# ---- a file changed under a restore ---------------------------------------------------------

def flip_byte(path, from_end=1000):
    with open(path, 'r+b') as f:
        f.seek(-from_end, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xff]))


def line_index(log, text, start=0):
    for i in range(start, len(log)):
        if text in log[i]:
            return i
    raise AssertionError('no %r after line %d in:\n%s' % (text, start, ''.join(log[start:])))


def test_a_file_changed_during_restore_fails_and_resets_the_backend(tmp):
    with Backends(ARGS.backend, tmp) as bs:
        src = bs.start('src', '--size', '4M')
        # each restore target holds SET_DEVICE_STATE_FD for 3 s: the file is
        # checked before, streamed only after it; the test changes a byte between
        dsts = {how: bs.start('dst-' + how, '--size', '4M', '--delay-reply', 'SET_DEVICE_STATE_FD:3000')
                for how in ('path', 'fd')}
        backends = ['--backend', 'src=' + src.sock]
        for how, b in dsts.items():
            backends += ['--backend', how + '=' + b.sock]
        with Attach(ARGS.vufront, ctl_path(tmp), *backends) as att, Control(att.control, timeout=60) as c:
            snap = os.path.join(tmp, 's.vfsnap')
            c.ok('snapshot', {'path': snap}, device='src')
            for how, b in dsts.items():
                fds = [os.open(snap, os.O_RDONLY | os.O_CLOEXEC)] if how == 'fd' else []
                args = {'fd': 0} if how == 'fd' else {'path': snap}
                id_ = c.next_id
                c.next_id += 1
                c.send_raw(json.dumps({'id': id_, 'cmd': 'restore', 'device': how, 'args': args}).encode(), fds)
                for fd in fds:
                    os.close(fd)
                b.log.expect('--delay-reply SET_DEVICE_STATE_FD', timeout=30)  # checked, not yet sent
                flip_byte(snap)
                r = c.reply(id_)
                flip_byte(snap)  # as it was, for the next round
                assert r['ok'] is False, r
                msg = r['error']['message']
                # a VMM's fd: the checksum of the bytes sent; a path (mapped):
                # the file's times moved since its check
                expect = 'checksum mismatch' if how == 'fd' else \
                    'snapshot file changed during restore (modified)'
                assert r['error']['code'] == 'invalid_payload' and expect in msg, r
                assert "the back-end's device was reset" in msg, r
                # the back-end got RESET_DEVICE after the state fd, and the device
                # is negotiated and usable: the unchanged file restores into it
                b.log.expect('RESET_DEVICE')
                assert line_index(b.log, 'RESET_DEVICE') > line_index(b.log, '--delay-reply SET_DEVICE_STATE_FD')
                assert c.ok('status', device=how)['state'] == 'negotiated'
            ok = c.ok('restore', {'path': snap}, device='path')
            assert ok['checksum'], ok


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--vufront', required=True)
    ap.add_argument('--vmm', required=True)
    ap.add_argument('--backend', required=True)
    ap.add_argument('-k', help='run only tests whose name contains this')
    ARGS = ap.parse_args()
    if os.geteuid() != 0:
        print('these tests need root (they demote a child to uid 65534)')
        return 1
    return run_tests(globals(), ARGS.k, prefix='vufront-attach-sec-')


if __name__ == '__main__':
    sys.exit(main())
