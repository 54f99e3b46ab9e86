//! Keeps a copy of the answer's text for the audit record when `detail`
//! asks for content: the JSON answer as sent, or a stream's text deltas
//! joined. It is the last answer filter, so it records what the client
//! receives; bounded, and it never changes the answer.

use crate::api::GatewayError;
use crate::http::sse;
use crate::pipeline::filter::AnswerFilter;
use std::cell::RefCell;
use std::rc::Rc;

/// Most bytes of an answer kept in a record.
const MAX_CAPTURE: usize = 1 << 20;

pub struct Capture {
    into: Rc<RefCell<String>>,
}

impl Capture {
    /// A filter and the text it fills in.
    pub fn filter() -> (Box<dyn AnswerFilter>, Rc<RefCell<String>>) {
        let into = Rc::new(RefCell::new(String::new()));
        (Box::new(Capture { into: into.clone() }), into)
    }

    fn keep(&self, text: &str) {
        let mut kept = self.into.borrow_mut();
        let room = MAX_CAPTURE.saturating_sub(kept.len());
        let mut end = text.len().min(room);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        kept.push_str(&text[..end]);
    }
}

impl AnswerFilter for Capture {
    fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
        self.keep(&String::from_utf8_lossy(body));
        Ok(())
    }

    fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        for data in sse::data_lines(events) {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
                continue;
            };
            let Some(choices) = event.get("choices").and_then(|c| c.as_array()) else {
                continue;
            };
            for choice in choices {
                let text = choice
                    .pointer("/delta/content")
                    .or_else(|| choice.get("text"))
                    .and_then(|t| t.as_str());
                if let Some(text) = text {
                    self.keep(text);
                }
            }
        }
        out.extend_from_slice(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_stream_deltas_and_passes_events_unchanged() {
        let (mut filter, text) = Capture::filter();
        let events = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: [DONE]\n\n";
        let mut out = Vec::new();
        filter.events(events, &mut out).unwrap();
        assert_eq!(out, events);
        assert_eq!(*text.borrow(), "Hello");
    }
}
