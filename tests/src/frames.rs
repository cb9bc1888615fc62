//! Frame builders for tests.

use bus_core::{Command, Frame, FrameMut};

/// `Echo` (16): the test handler answers with `EchoReply` (17).
pub const ECHO: u8 = 16;
/// `EchoReply` (17).
pub const ECHO_REPLY: u8 = 17;
/// An application command the test handler only records.
pub const RECORD: u8 = 30;
/// An application command that makes the test handler panic.
pub const PANIC_HANDLER: u8 = 98;

/// A sealed application frame with `command`, `request` and a body of
/// `body_len` bytes following a pattern derived from `request`.
pub fn app(command: u8, request: u64, body_len: usize) -> Frame {
    let mut frame = app_mut(command, request, body_len);
    frame.seal();
    frame.freeze()
}

/// Like [`app`] but not sealed and still writable.
pub fn app_mut(command: u8, request: u64, body_len: usize) -> FrameMut {
    let mut frame = FrameMut::new(Command::from_u8(command), body_len);
    frame.header_mut().set_request(request);
    for (i, b) in frame.body_mut().iter_mut().enumerate() {
        #[allow(clippy::cast_possible_truncation, reason = "a byte pattern")]
        let v = (i as u64).wrapping_mul(31).wrapping_add(request) as u8;
        *b = v;
    }
    frame
}

/// Asserts that `body` is the pattern [`app`] wrote for `request`.
///
/// # Panics
/// On the first differing byte.
pub fn assert_pattern(body: &[u8], request: u64, body_len: usize) {
    assert_eq!(body.len(), body_len, "body length");
    for (i, b) in body.iter().enumerate() {
        #[allow(clippy::cast_possible_truncation, reason = "a byte pattern")]
        let v = (i as u64).wrapping_mul(31).wrapping_add(request) as u8;
        assert_eq!(*b, v, "body byte {i} of request {request}");
    }
}
