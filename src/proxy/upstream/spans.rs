//! Positions of a parsed HTTP/1.1 head's pieces in its read buffer, so that the buffer can be
//! frozen after parsing and the header values made slices of it (no copy per value). Used by
//! the lean client's response parse and the server's own request parse; owns nothing else.

/// Header lines kept on the stack while parsing; a head with more is parsed again with
/// `MAX_HEADER_LINES` on the heap (rare).
pub const STACK_HEADERS: usize = 48;

/// Where a parsed head's pieces are in the buffer.
#[derive(Clone, Copy, Default)]
pub struct Span(u32, u32);

impl Span {
    /// `part`'s place in `base`; empty when it is not in it (httparse gives an empty reason
    /// phrase as a static `""`).
    pub fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if !part.is_empty() && end <= base.len() => Span(start as u32, end as u32),
            _ => Span::default(),
        }
    }

    pub fn range(self) -> std::ops::Range<usize> {
        self.0 as usize..self.1 as usize
    }

    pub fn start(self) -> usize {
        self.0 as usize
    }

    /// `start..end` (`end` exclusive); positions within a head, which is far under 4 GiB.
    pub fn new(start: usize, end: usize) -> Span {
        Span(start as u32, end as u32)
    }
}

/// The header lines' places: on the stack for the usual head, on the heap past
/// [`STACK_HEADERS`] lines (no allocation per response otherwise). Filled in place by
/// the parser (`h1::locate`, the server's request head): at 768 bytes, returning it would copy it at each return.
pub struct Spans {
    stack: [(Span, Span); STACK_HEADERS],
    n: usize,
    heap: Vec<(Span, Span)>,
}

impl Default for Spans {
    fn default() -> Spans {
        Spans::new()
    }
}

impl Spans {
    pub fn new() -> Spans {
        Spans { stack: [(Span::default(), Span::default()); STACK_HEADERS], n: 0, heap: Vec::new() }
    }

    pub fn fill(&mut self, lines: impl ExactSizeIterator<Item = (Span, Span)>) {
        self.heap.clear();
        self.n = 0;
        if lines.len() > STACK_HEADERS {
            self.heap.extend(lines);
            return;
        }
        for (slot, line) in self.stack.iter_mut().zip(lines) {
            *slot = line;
            self.n += 1;
        }
    }

    pub fn as_slice(&self) -> &[(Span, Span)] {
        if self.heap.is_empty() {
            &self.stack[..self.n]
        } else {
            &self.heap
        }
    }
}
