//! A minimal server-sent-events reader: the subset the console speaks (`event:`, `data:`,
//! `id:`, comments, blank-line dispatch), over untrusted bytes with a bounded buffer.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the server named none.
    pub event: String,
    pub data: String,
}

/// Largest event the reader accepts; the console's are a few KiB (a signed bundle ≤ 1 MiB).
const MAX_EVENT_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them. Errors when one event grows past the
    /// bound (the stream should then be dropped and reopened).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line =
                String::from_utf8(line).map_err(|_| "event stream is not UTF-8".to_string())?;
            if line.is_empty() {
                if !self.data.is_empty() || self.event.is_some() {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        let pending: usize = self.buf.len() + self.data.iter().map(String::len).sum::<usize>();
        if pending > MAX_EVENT_BYTES {
            return Err(format!("event larger than {MAX_EVENT_BYTES} bytes"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere() {
        let text = b"event: policy\ndata: {\"a\":1}\n\n: comment\nevent: trigger\r\nid: t1\r\ndata: x\r\ndata: y\r\n\r\ndata: plain\n\n";
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let mut events = p.feed(&text[..split]).unwrap();
            events.extend(p.feed(&text[split..]).unwrap());
            assert_eq!(
                events,
                vec![
                    SseEvent { event: "policy".into(), data: "{\"a\":1}".into() },
                    SseEvent { event: "trigger".into(), data: "x\ny".into() },
                    SseEvent { event: "message".into(), data: "plain".into() },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn refuses_unbounded_events() {
        let mut p = SseParser::default();
        let line = vec![b'a'; 1024 * 1024];
        assert!(p.feed(b"data: ").is_ok());
        assert!(p.feed(&line).is_ok());
        assert!(p.feed(&line).is_err());
    }
}
