"""The test kit's SMTP server (testkit/src/smtp.rs): aiosmtpd on the given loopback port,
keeping every message it accepts in a spool directory, in arrival order.

    python3 smtp-server.py HOST PORT SPOOL

Each message is two files, NNNNNN.json (the envelope: {"mail_from": ..., "rcpt_tos": [...]})
and NNNNNN.eml (the message exactly as received, after dot-unstuffing); the .eml is renamed
into place last, so a reader that sees it sees both whole. It prints "ready" once it accepts
connections and runs until killed.
"""

import json
import os
import sys
import threading

from aiosmtpd.controller import Controller


class Spool:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    def _write(self, name, data):
        tmp = os.path.join(self.directory, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.directory, name))

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            stem = "%06d" % self.count
        envelope_json = {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos)}
        self._write(stem + ".json", json.dumps(envelope_json).encode())
        self._write(stem + ".eml", envelope.original_content)
        return "250 Message accepted for delivery"


def main():
    host, port, spool = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    controller = Controller(Spool(spool), hostname=host, port=port)
    # Binds, and checks that the server answers, before returning; a taken port raises here.
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
