//! The SMTP server against a raw SMTP dialogue: what is sent is kept, whole and in order, with
//! its envelope. Needs python3 with aiosmtpd (scripts/setup-debian.sh); without it these tests
//! fail, they do not skip.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use rearview_testkit::smtp::SmtpServer;

const WAIT: Duration = Duration::from_secs(10);

/// One SMTP conversation on `conn`: sends `line` and checks the reply starts with `code`.
struct Dialogue {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Dialogue {
    fn open(port: u16) -> Dialogue {
        let conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect to SMTP");
        conn.set_read_timeout(Some(WAIT)).unwrap();
        let writer = conn.try_clone().unwrap();
        let mut dialogue = Dialogue { reader: BufReader::new(conn), writer };
        dialogue.expect("220");
        dialogue
    }

    /// Reads one (possibly multi-line) reply; panics unless its code is `code`.
    fn expect(&mut self, code: &str) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read an SMTP reply");
            reply.push_str(&line);
            // "250-..." continues, "250 ..." ends a reply.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                break;
            }
        }
        assert!(reply.starts_with(code), "wanted {code}, got {reply:?}");
        reply
    }

    fn say(&mut self, line: &str, code: &str) -> String {
        write!(self.writer, "{line}\r\n").expect("write an SMTP command");
        self.expect(code)
    }
}

/// Sends one message from `from` to `to` with `body` lines; returns the text as sent.
fn send(d: &mut Dialogue, from: &str, to: &[&str], subject: &str, body: &[&str]) -> String {
    d.say(&format!("MAIL FROM:<{from}>"), "250");
    for rcpt in to {
        d.say(&format!("RCPT TO:<{rcpt}>"), "250");
    }
    d.say("DATA", "354");
    let mut text = format!("From: <{from}>\r\nTo: <{}>\r\nSubject: {subject}\r\n\r\n", to[0]);
    for line in body {
        text.push_str(line);
        text.push_str("\r\n");
    }
    // Dot-stuffing: a line starting with "." is sent with one more.
    let stuffed: String = text
        .split_inclusive("\r\n")
        .map(|l| if l.starts_with('.') { format!(".{l}") } else { l.to_owned() })
        .collect();
    write!(d.writer, "{stuffed}.\r\n").unwrap();
    d.expect("250");
    text
}

#[test]
fn messages_sent_are_kept_whole_in_order() {
    let smtp = SmtpServer::start().unwrap_or_else(|e| panic!("cannot start the SMTP server: {e}"));
    assert!(smtp.messages().is_empty());
    let mut d = Dialogue::open(smtp.port());
    let ehlo = d.say("EHLO kit.test", "250");
    assert!(ehlo.contains("8BITMIME"), "{ehlo}");
    let first = send(
        &mut d,
        "console@rearview.test",
        &["alice@example.test", "bob@example.test"],
        "Clip ready",
        &["The clip you asked for is ready.", ".a line that starts with a dot", "bye"],
    );
    let second = send(&mut d, "console@rearview.test", &["carol@example.test"], "Second", &["two"]);
    d.say("QUIT", "221");

    let messages = smtp.wait_for_messages(2, WAIT);
    assert_eq!(messages, [first, second]);
    let received = smtp.received();
    assert_eq!(received[0].mail_from, "console@rearview.test");
    assert_eq!(received[0].rcpt_tos, ["alice@example.test", "bob@example.test"]);
    assert_eq!(received[1].rcpt_tos, ["carol@example.test"]);
}

#[test]
#[should_panic(expected = "waiting for 1 messages")]
fn waiting_for_a_message_that_never_comes_fails_saying_so() {
    let smtp = SmtpServer::start().unwrap_or_else(|e| panic!("cannot start the SMTP server: {e}"));
    smtp.wait_for_messages(1, Duration::from_millis(300));
}
