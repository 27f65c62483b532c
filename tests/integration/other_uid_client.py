#!/usr/bin/env python3
"""A VMM connection to `vufront attach` as whatever uid runs this script
(test_attach_security.py runs it as nobody, uid 65534):

    other_uid_client.py CONTROL STEPS_JSON

STEPS_JSON is a list of commands {"cmd", "args", "device"}; a step with
"open": [PATH, MODE] opens PATH itself (MODE "r", "w" or "a": read, write +
create + truncate, append), with this process's rights, and passes it as the
packet's fd 0 (refer to it as {"fd": 0}). Prints one JSON line per step: the
reply, or {"open_error": "EACCES"} when the file cannot be opened. Before
that, one line about the connection: {"connect_error": "EACCES"} when the
socket refuses us, the greeting otherwise (a "refused" event ends the run).
"""
import errno
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vubackend import Control  # noqa: E402

FLAGS = {'r': os.O_RDONLY, 'w': os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 'a': os.O_WRONLY | os.O_APPEND}


def main():
    control, steps = sys.argv[1], json.loads(sys.argv[2])
    try:
        c = Control(control, timeout=60)
    except OSError as e:
        print(json.dumps({'connect_error': errno.errorcode.get(e.errno, str(e.errno))}))
        return 0
    print(json.dumps(c.greeting), flush=True)
    if c.greeting.get('event') != 'hello':
        return 0
    for step in steps:
        fds = []
        if 'open' in step:
            path, mode = step['open']
            try:
                fds = [os.open(path, FLAGS[mode] | os.O_CLOEXEC, 0o600)]
            except OSError as e:
                print(json.dumps({'open_error': errno.errorcode.get(e.errno, str(e.errno))}), flush=True)
                continue
        try:
            r = c.call(step['cmd'], step.get('args'), fds=fds, device=step.get('device'))
        except (OSError, EOFError, socket.timeout) as e:
            print(json.dumps({'transport_error': str(e)}), flush=True)
            return 0
        finally:
            for fd in fds:
                os.close(fd)
        print(json.dumps(r), flush=True)
    c.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
