//! Answer filters: steps that change an answer on its way to the client
//! (the PII guard masks and puts pseudonyms back, the agent policy replaces
//! forbidden tool calls, accounting strips a usage event the client did not
//! ask for). The relay runs them on successful answers only; a request with
//! no filter pays nothing.

use crate::api::GatewayError;

pub trait AnswerFilter {
    /// A whole (non-streamed) JSON answer, rewritten in place. An error
    /// replaces the answer.
    fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError>;
    /// Complete SSE events as received (one or more, each ending with its
    /// blank line); appends what the client gets to `out`, holding back
    /// what it must. An error ends the stream with an error event.
    fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError>;
    /// The upstream's stream ended: release what was held back.
    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), GatewayError> {
        Ok(())
    }
}

/// The filters of one request, applied in the order they were added.
#[derive(Default)]
pub struct AnswerFilters {
    filters: Vec<Box<dyn AnswerFilter>>,
    scratch: Vec<u8>,
}

impl AnswerFilters {
    pub fn push(&mut self, filter: Box<dyn AnswerFilter>) {
        self.filters.push(filter);
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    pub fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
        self.filters.iter_mut().try_for_each(|f| f.body(body))
    }

    pub fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        self.pipe(0, events, out)
    }

    /// Flushes each filter in order, passing what one releases through the
    /// filters after it.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), GatewayError> {
        self.finish_from(0, out)
    }

    fn finish_from(&mut self, from: usize, out: &mut Vec<u8>) -> Result<(), GatewayError> {
        for i in from..self.filters.len() {
            let mut released = Vec::new();
            self.filters[i].finish(&mut released)?;
            self.pipe(i + 1, &released, out)?;
        }
        Ok(())
    }

    /// Runs `input` through the filters from `from` on.
    fn pipe(&mut self, from: usize, input: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let n = self.filters.len();
        if from >= n {
            out.extend_from_slice(input);
            return Ok(());
        }
        let mut current = input.to_vec();
        for i in from..n - 1 {
            self.scratch.clear();
            let verdict = self.filters[i].events(&current, &mut self.scratch);
            std::mem::swap(&mut current, &mut self.scratch);
            if let Err(e) = verdict {
                // What the refusing filter let through still passes the
                // filters after it before the stream ends.
                let _ = self
                    .pipe(i + 1, &current, out)
                    .and_then(|()| self.finish_from(i + 1, out));
                return Err(e);
            }
        }
        self.filters[n - 1].events(&current, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper-cases events and holds the last byte back until finish.
    struct Upper(Option<u8>);

    impl AnswerFilter for Upper {
        fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
            body.make_ascii_uppercase();
            Ok(())
        }
        fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
            out.extend(self.0.take());
            if let Some((last, rest)) = events.split_last() {
                out.extend(rest.iter().map(u8::to_ascii_uppercase));
                self.0 = Some(last.to_ascii_uppercase());
            }
            Ok(())
        }
        fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), GatewayError> {
            out.extend(self.0.take());
            Ok(())
        }
    }

    #[test]
    fn chains_and_flushes_in_order() {
        let mut filters = AnswerFilters::default();
        filters.push(Box::new(Upper(None)));
        filters.push(Box::new(Upper(None)));
        let mut out = Vec::new();
        filters.events(b"ab", &mut out).unwrap();
        filters.events(b"cd", &mut out).unwrap();
        filters.finish(&mut out).unwrap();
        assert_eq!(out, b"ABCD");
        let mut body = b"x".to_vec();
        filters.body(&mut body).unwrap();
        assert_eq!(body, b"X");
    }

    /// Lets everything before a `!` through, then refuses.
    struct Bang;

    impl AnswerFilter for Bang {
        fn body(&mut self, _: &mut Vec<u8>) -> Result<(), GatewayError> {
            Ok(())
        }
        fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
            match events.iter().position(|&b| b == b'!') {
                Some(i) => {
                    out.extend_from_slice(&events[..i]);
                    Err(GatewayError::ToolNotAllowed("x".into()))
                }
                None => {
                    out.extend_from_slice(events);
                    Ok(())
                }
            }
        }
    }

    #[test]
    fn a_refusing_filter_in_the_middle_still_releases() {
        let mut filters = AnswerFilters::default();
        filters.push(Box::new(Bang));
        filters.push(Box::new(Upper(None)));
        let mut out = Vec::new();
        assert!(filters.events(b"ab!cd", &mut out).is_err());
        // What Bang let through passed Upper, which was flushed.
        assert_eq!(out, b"AB");
    }

    #[test]
    fn no_filter_copies_through() {
        let mut filters = AnswerFilters::default();
        let mut out = Vec::new();
        filters.events(b"data: x\n\n", &mut out).unwrap();
        assert_eq!(out, b"data: x\n\n");
    }
}
